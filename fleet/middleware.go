package fleet

import (
	"context"
	"net/http"
	"time"

	"github.com/courier-go/courier/engine"
)

// Middleware returns an [engine.Middleware] that puts every attempt of an
// engine under the fleet's limits: before the attempt it waits for the
// fleet's turn for the request's host (as in the URL, with its port when
// it has one), and after an answer of 429 or 503 with Retry-After it holds
// that host for the whole fleet, for the time asked (at most maxHold; if
// zero, [engine.DefaultMaxRetryAfter]).
//
// Use it instead of the engine's own RateLimit, not with it: each process
// pacing itself at the fleet's limit defeats the purpose.
func (l *Limiter) Middleware(maxHold time.Duration) engine.Middleware {
	if maxHold <= 0 {
		maxHold = engine.DefaultMaxRetryAfter
	}
	return func(next http.RoundTripper) http.RoundTripper {
		return engine.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
			host := req.URL.Host
			if err := l.Wait(req.Context(), host); err != nil {
				return nil, err
			}
			resp, err := next.RoundTrip(req)
			if err != nil {
				return resp, err
			}
			if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
				if d, ok := engine.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && d > 0 {
					ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), DefaultWriteTimeout)
					l.Hold(ctx, host, min(d, maxHold))
					cancel()
				}
			}
			return resp, nil
		})
	}
}
