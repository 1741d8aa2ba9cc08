// Package windowlimit plays a rate-limited API for tests and the bench: a
// fixed number of requests per one-second window (windows start at whole
// seconds), 429 beyond, with a Retry-After of the whole seconds left in the
// window, rounded up, and, when asked, the X-RateLimit-Remaining and
// X-RateLimit-Reset (Unix seconds) headers that GitHub sends.
package windowlimit

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Window counts requests against the limit of the current window. The
// zero value allows nothing; set Limit before use. Safe for concurrent use.
type Window struct {
	Limit int

	mu       sync.Mutex // protects the fields below
	window   int64      // Unix second of the current window
	used     int
	accepted int
	refused  int
}

// Serve counts a request that arrived at now and answers it: nothing
// written (a 200 by default) while the window has room, 429 beyond. With
// quota every answer carries the quota headers.
func (l *Window) Serve(w http.ResponseWriter, now time.Time, quota bool) {
	l.mu.Lock()
	if sec := now.Unix(); sec != l.window {
		l.window, l.used = sec, 0
	}
	ok := l.used < l.Limit
	if ok {
		l.used++
		l.accepted++
	} else {
		l.refused++
	}
	left, reset := l.Limit-l.used, l.window+1
	l.mu.Unlock()
	if quota {
		w.Header().Set("X-Ratelimit-Remaining", strconv.Itoa(left))
		w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(reset, 10))
	}
	if !ok {
		wait := time.Unix(reset, 0).Sub(now)
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		w.WriteHeader(http.StatusTooManyRequests)
	}
}

// Counts returns how many requests were let through and how many refused.
func (l *Window) Counts() (accepted, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted, l.refused
}

// Reset forgets every request counted.
func (l *Window) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.window, l.used, l.accepted, l.refused = 0, 0, 0, 0
}
