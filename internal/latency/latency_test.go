package latency_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/courier-go/courier/internal/latency"
)

func TestQuantilesWithinTwoPercent(t *testing.T) {
	var h latency.Histogram
	for i := 1; i <= 10000; i++ {
		h.Add(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 5 * time.Second, 0.9: 9 * time.Second, 0.99: 9900 * time.Millisecond} {
		got := h.Quantile(q)
		assert.InEpsilon(t, float64(want), float64(got), 0.02, "q=%v got %s", q, got)
	}
	var other latency.Histogram
	for range 10000 {
		other.Add(time.Duration(rand.IntN(10)) * time.Microsecond)
	}
	h.Merge(&other)
	assert.EqualValues(t, 20000, h.Count())
	assert.Less(t, h.Quantile(0.25), 20*time.Microsecond)
	var empty latency.Histogram
	assert.Zero(t, empty.Quantile(0.5))
}
