package errors

import (
	stderrors "errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Is is shorthand for the standard library's errors.Is.
func Is(err, target error) bool { return stderrors.Is(err, target) }

// As is shorthand for the standard library's errors.As.
func As(err error, target any) bool { return stderrors.As(err, target) }

// New is shorthand for the standard library's errors.New.
func New(text string) error { return stderrors.New(text) }

// Join is shorthand for the standard library's errors.Join.
func Join(errs ...error) error { return stderrors.Join(errs...) }

// Unwrap is shorthand for the standard library's errors.Unwrap.
func Unwrap(err error) error { return stderrors.Unwrap(err) }

// ErrUnsupported is shorthand for the standard library's errors.ErrUnsupported.
var ErrUnsupported = stderrors.ErrUnsupported

var (
	// ErrSessionExpired fails every pending and new request once the session
	// has ended: the refresh endpoint refused the refresh token, or the
	// session was terminated on purpose. New tokens start a new session.
	ErrSessionExpired = New("courier: session expired")

	// ErrRefreshFailed fails the requests that waited on a token refresh that
	// kept failing for transient reasons (network errors, 5xx). The session
	// itself goes on; the next 401 tries again.
	ErrRefreshFailed = New("courier: token refresh failed")

	// ErrQueueFull is returned by TrySubmit when the bounded queue has no room.
	ErrQueueFull = New("courier: queue full")

	// ErrClosed fails requests submitted after Shutdown or Close, and the
	// requests that Close cancelled.
	ErrClosed = New("courier: engine closed")

	// ErrResponseTooLarge fails a request whose response body is longer than
	// the configured limit.
	ErrResponseTooLarge = New("courier: response body too large")

	// ErrRetryBudgetExhausted fails a request that would have been retried
	// but for the retry budget, which stops retry storms against a failing
	// server. The error also wraps the last attempt's failure.
	ErrRetryBudgetExhausted = New("courier: retry budget exhausted")

	// ErrBodyNotReplayable fails a request sent through the engine's
	// RoundTripper whose first attempt would have been retried or replayed
	// after a token refresh, but whose body cannot be sent again: it is not
	// empty and the http.Request has no GetBody. The error also wraps the
	// first attempt's failure.
	ErrBodyNotReplayable = New("courier: request body cannot be sent again (http.Request.GetBody is nil)")

	// ErrCircuitOpen fails a request, without sending it, to a host (or
	// route) whose circuit breaker is open: its recent attempts kept
	// failing. The error is a *CircuitOpenError, which says until when and
	// wraps the failure that opened the circuit.
	ErrCircuitOpen = New("courier: circuit open")

	// ErrLockLost is returned by a token store's refresh lock
	// (engine.TokenLock) when its lease has lapsed, and by a spent lock's
	// methods: the holder can no longer assume it is alone.
	ErrLockLost = New("courier: token store lock lost")
)

// CircuitOpenError is a request refused because the circuit breaker of
// its host, or of its route, is open. It matches ErrCircuitOpen with Is and
// wraps the last failure that kept or put the circuit open (an answer's
// body and headers left out: they were another request's). It is a plain
// value.
type CircuitOpenError struct {
	// Host is the breaker's host as request URLs name it, with the route's
	// path prefix when the breaker is a route's ("api.example.com/search").
	Host string
	// Until is when the breaker half-opens and lets probes through again.
	Until time.Time
	// Err is the last failure seen before the circuit opened; nil when it
	// is not known (another process of a fleet opened it).
	Err error
}

// Error names the host, when the circuit half-opens and the last failure.
func (e *CircuitOpenError) Error() string {
	msg := fmt.Sprintf("courier: circuit open for %s until %s", e.Host, e.Until.UTC().Format(time.RFC3339Nano))
	if e.Err != nil {
		msg += ": last failure: " + e.Err.Error()
	}
	return msg
}

// Is reports whether target is ErrCircuitOpen.
func (e *CircuitOpenError) Is(target error) bool { return target == ErrCircuitOpen }

// Unwrap returns the last failure.
func (e *CircuitOpenError) Unwrap() error { return e.Err }

// HTTPError is a response with a status outside 2xx, after every attempt the
// retry policy allowed. It is a plain value; treat its fields as read-only
// once returned, as dedup followers share it.
type HTTPError struct {
	Status   int         // the final attempt's status code
	Header   http.Header // the final attempt's response headers
	Body     []byte      // the final attempt's body, bounded like any body
	Method   string
	URL      string // without user info; query values are not included
	Attempts int    // how many attempts reached the transport, replays included
	// RetryAfter is the wait the server asked for (Retry-After), capped; zero
	// when it asked for none. When it is set and the error says the wait did
	// not fit, the request failed at once instead of waiting past its deadline.
	RetryAfter time.Duration
	// Reason says why the request was not tried again when that is not
	// obvious from the status, such as a Retry-After that does not fit the
	// deadline. Empty otherwise.
	Reason string
}

// Error reports the method, URL, status and attempts.
func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "courier: %s %s: %d %s (attempts %d", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.Attempts)
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	b.WriteString(")")
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	return b.String()
}

// RequestError is a request that got no usable HTTP answer: the connection
// failed, the attempt timed out, the body could not be read or written, or,
// after it was sent, its token could not be refreshed or the session ended
// (Err then matches ErrRefreshFailed or ErrSessionExpired).
type RequestError struct {
	Method string
	URL    string // without user info or query
	// Attempts is how many attempts reached the transport, replays after a
	// token refresh included; 0 when none did.
	Attempts int
	Err      error
}

// Error reports the method, URL, attempts and the cause.
func (e *RequestError) Error() string {
	return fmt.Sprintf("courier: %s %s (attempts %d): %v", e.Method, e.URL, e.Attempts, e.Err)
}

// Unwrap returns the cause.
func (e *RequestError) Unwrap() error { return e.Err }

// Timeout reports whether the cause was a timeout.
func (e *RequestError) Timeout() bool {
	var t interface{ Timeout() bool }
	return As(e.Err, &t) && t.Timeout()
}

// PanicError is a panic raised by user code that courier called (middleware,
// a policy, a parser or a hook). The engine keeps running; the panic fails
// only the request it happened in.
type PanicError struct {
	Where string // what courier was calling, such as "middleware"
	Value any    // the value passed to panic
	Stack []byte // the goroutine's stack at the panic
}

// Error reports where the panic happened and its value.
func (e *PanicError) Error() string {
	return fmt.Sprintf("courier: panic in %s: %v", e.Where, e.Value)
}

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// RefreshError is a token endpoint's answer to a refresh outside 2xx, with
// the error code and description of RFC 6749 section 5.2 when the answer
// carries them ({"error":"invalid_grant","error_description":"..."}). It is
// a plain value, made by the engine; treat its fields as read-only.
//
// The requests that waited on the refresh fail with an error that wraps
// it: one that matches ErrSessionExpired when the endpoint refused the
// refresh (400, 401 or 403; the session has ended), ErrRefreshFailed
// otherwise (the session goes on). Find it with As.
type RefreshError struct {
	Method string // empty when URL is
	// URL is the token endpoint, without user info or query; empty when
	// an oauth2.TokenSource made the refresh and did not say.
	URL    string
	Status int // the answer's status code
	// Code is the answer's "error" field, such as "invalid_grant" (the
	// refresh token is expired, revoked or was already used) or
	// "invalid_client" (the client credentials are wrong); empty when the
	// answer has none.
	Code string
	// Description is the answer's "error_description", empty when it has
	// none. Any token or client secret that the refresh sent is replaced
	// by "[redacted]", characters that are not printable ASCII are
	// dropped, and it is cut to 256 bytes.
	Description string
}

// Error reports the endpoint, the status and the code and description.
func (e *RefreshError) Error() string {
	var b strings.Builder
	verb := "answered"
	if e.Refused() {
		verb = "refused with"
	}
	b.WriteString("refresh: ")
	if e.URL != "" {
		fmt.Fprintf(&b, "%s %s ", e.Method, e.URL)
	}
	fmt.Fprintf(&b, "%s %d %s", verb, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, " (%s)", e.Description)
	}
	return b.String()
}

// Refused reports whether the endpoint refused the refresh itself (status
// 400, 401 or 403), which ends the session.
func (e *RefreshError) Refused() bool {
	return e.Status == http.StatusBadRequest || e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// Misconfigured reports whether the code says that the refresh is set up
// wrongly rather than that the session is over: the client credentials
// are refused (invalid_client), the client may not use this grant
// (unauthorized_client), the endpoint does not know the grant
// (unsupported_grant_type) or the scope is refused (invalid_scope). New
// tokens will not help; the configuration must change.
func (e *RefreshError) Misconfigured() bool {
	switch e.Code {
	case "invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_scope":
		return true
	}
	return false
}
