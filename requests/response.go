package requests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Response is the answer to a request: the final attempt's status, headers
// and body, and how many attempts it took. Deduplicated requests share one
// Body slice: treat it as read-only. A Response is not changed by the
// engine once returned, so any number of goroutines may read it.
type Response struct {
	Status int
	Header http.Header
	Body   []byte // nil when the request streamed to an Output writer
	// Attempts is how many attempts reached the transport: the first,
	// retries, and replays after a token refresh (which do not count
	// against the engine's retry limit, so Attempts may exceed it).
	Attempts int
	// Duration runs from the request's admission to its resolution, queueing,
	// backoff and refresh waits included.
	Duration time.Duration
	Request  *Request
	// Cache says how the engine's cache took part in the answer: CacheHit
	// (served from the cache, nothing sent), CacheRevalidated (the server
	// answered 304 Not Modified to a conditional request, and the stored
	// answer is served with the 304's headers) or CacheMiss (the cache was
	// consulted and the answer came from the server). It is the zero
	// value, CacheNone, when the engine has no cache or the request is not
	// one a cache serves (a method other than GET or HEAD, a body streamed
	// to an Output writer).
	Cache CacheStatus
}

// CacheStatus is how a cache took part in an answer: see Response.Cache.
type CacheStatus string

// The values of [Response.Cache].
const (
	CacheNone        CacheStatus = ""
	CacheMiss        CacheStatus = "miss"
	CacheHit         CacheStatus = "hit"
	CacheRevalidated CacheStatus = "revalidated"
)

// FromCache reports whether the answer's body came from the cache: a hit
// or a revalidation.
func (s CacheStatus) FromCache() bool { return s == CacheHit || s == CacheRevalidated }

// OK reports whether the status is 2xx.
func (r *Response) OK() bool { return r != nil && r.Status >= 200 && r.Status < 300 }

// Decode parses the response body as JSON into a new T.
func Decode[T any](r *Response) (T, error) {
	var v T
	if r == nil {
		return v, fmt.Errorf("requests: decode: nil response")
	}
	if err := json.Unmarshal(r.Body, &v); err != nil {
		return v, fmt.Errorf("requests: decode %d response into %T: %w", r.Status, v, err)
	}
	return v, nil
}
