package windowlimit

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestWindowAllowsLimitPerSecondAndSaysWhenToComeBack(t *testing.T) {
	l := &Window{Limit: 2}
	start := time.Unix(1000, 250*int64(time.Millisecond))
	status := func(now time.Time) (int, http.Header) {
		rec := httptest.NewRecorder()
		l.Serve(rec, now, true)
		return rec.Code, rec.Header()
	}
	code, h := status(start)
	assert.Equal(t, 200, code)
	assert.Equal(t, "1", h.Get("X-Ratelimit-Remaining"))
	assert.Equal(t, "1001", h.Get("X-Ratelimit-Reset"))
	code, _ = status(start)
	assert.Equal(t, 200, code)
	code, h = status(start.Add(500 * time.Millisecond))
	assert.Equal(t, http.StatusTooManyRequests, code, "the third in the window")
	assert.Equal(t, "1", h.Get("Retry-After"), "the 0.25 s left, rounded up")
	code, _ = status(start.Add(time.Second))
	assert.Equal(t, 200, code, "a new window")
	accepted, refused := l.Counts()
	assert.Equal(t, 3, accepted)
	assert.Equal(t, 1, refused)
	l.Reset()
	accepted, refused = l.Counts()
	assert.Zero(t, accepted+refused)
}
