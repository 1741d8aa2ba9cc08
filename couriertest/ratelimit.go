package couriertest

import (
	"math"
	"net/http"
	"strconv"
	"time"
)

// rateWindow is the fixed window of WithRateLimit; API.mu protects it.
type rateWindow struct {
	start time.Time // the current window's start
	used  int       // requests admitted in it
}

// admitRate counts a request against the current window and writes the
// quota fields; past the quota it answers 429 and reports false.
func (a *API) admitRate(w http.ResponseWriter) bool {
	now := a.cfg.now()
	win := a.cfg.rateWindow
	start := now.Truncate(win)
	a.mu.Lock()
	if !a.rate.start.Equal(start) {
		a.rate = rateWindow{start: start}
	}
	ok := a.rate.used < a.cfg.rateLimit
	if ok {
		a.rate.used++
	}
	remaining := a.cfg.rateLimit - a.rate.used
	a.mu.Unlock()

	reset := int64(math.Ceil(start.Add(win).Sub(now).Seconds()))
	h := w.Header()
	h.Set("RateLimit-Policy", `"default";q=`+strconv.Itoa(a.cfg.rateLimit)+`;w=`+strconv.FormatInt(int64(math.Ceil(win.Seconds())), 10))
	h.Set("RateLimit", `"default";r=`+strconv.Itoa(remaining)+`;t=`+strconv.FormatInt(reset, 10))
	if !ok {
		a.rateLimited.Add(1)
		h.Set("Retry-After", strconv.FormatInt(max(reset, 1), 10))
		writeJSON(w, http.StatusTooManyRequests, apiError{"rate_limited", "quota exhausted for this window"})
	}
	return ok
}
