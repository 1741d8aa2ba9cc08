// Package latency is a log-bucketed latency histogram: quantiles within
// about 1% in constant memory, however many samples a run takes. The
// command's summary and the bench program share it.
package latency

import (
	"math"
	"time"
)

const (
	minimum = time.Microsecond
	growth  = 1.02
	buckets = 1400 // 1 µs * 1.02^1400 is about 11 days
)

// Histogram counts durations. The zero value is ready to use. It is not
// safe for concurrent use.
type Histogram struct {
	counts [buckets]int64
	n      int64
}

func bucket(d time.Duration) int {
	if d <= minimum {
		return 0
	}
	return min(int(math.Log(float64(d)/float64(minimum))/math.Log(growth)), buckets-1)
}

// Add counts d.
func (h *Histogram) Add(d time.Duration) {
	h.counts[bucket(d)]++
	h.n++
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// Count returns how many samples were added.
func (h *Histogram) Count() int64 { return h.n }

// Quantile returns the q-th quantile (0 < q <= 1), or 0 with no samples.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			// The bucket's geometric middle.
			return time.Duration(float64(minimum) * math.Pow(growth, float64(i)+0.5))
		}
	}
	return 0
}
