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
}

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
