package requests

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/courier-go/courier/internal/redact"
)

// Request is one API call to submit to an engine. Build it with [New] and
// [Option]s, or fill the fields directly. The engine reads a Request and
// never changes it; do not change it while it is pending.
//
// The zero value is not a valid request: it has no path. A Request is a
// plain value; it is safe to share between goroutines once built, as the
// engine only reads it.
type Request struct {
	// Method is the HTTP method; "" means GET.
	Method string
	// Path is resolved against the engine's base URL. It may also be an
	// absolute URL; the engine's token is attached only when that URL has the
	// base URL's origin.
	Path string
	// Query values are added to any query in Path.
	Query url.Values
	// Header values are sent on top of the engine's default headers.
	Header http.Header
	// Body is opened afresh for each attempt; nil sends no body.
	Body Body
	// SensitiveHeaders names headers of Header that carry credentials, on
	// top of those the engine always treats so (Authorization, Cookie, its
	// Config.SensitiveHeaders): they are stripped when a redirect leaves
	// the request's origin. [WithSensitiveHeader] sets one and marks it.
	SensitiveHeaders []string

	// NoAuth sends the request without the engine's token, and a 401 on it
	// never triggers a refresh.
	NoAuth bool
	// IdempotencyKey, when set, is sent as the Idempotency-Key header and
	// makes a non-idempotent method (POST, PATCH) safe to retry.
	IdempotencyKey string
	// DedupKey merges this request with any in-flight request carrying the
	// same key, whatever its method. NoDedup keeps it apart from all others.
	DedupKey string
	NoDedup  bool
	// Timeout bounds each attempt, body read included; 0 means the engine's.
	Timeout time.Duration
	// Output, when set, receives the response body as it streams in, instead
	// of Response.Body. Such requests are never deduplicated, and are not
	// retried once a byte has been written.
	Output io.Writer

	// err is an option that could not be applied; the engine fails the
	// request with it instead of sending it.
	err error
}

// Option sets one property of a [Request].
type Option func(*Request)

// New returns a request for method and path with opts applied. An option
// that cannot be applied (a value that cannot be encoded as JSON, say) is
// remembered, and the request fails with that error when submitted.
func New(method, path string, opts ...Option) *Request {
	r := &Request{Method: method, Path: path}
	r.Apply(opts...)
	return r
}

// Apply applies opts to r in order.
func (r *Request) Apply(opts ...Option) {
	for _, o := range opts {
		if o != nil {
			o(r)
		}
	}
}

// Err reports what is wrong with r, or nil when it can be sent: an option
// that failed, a missing path, or a method that is not an HTTP token.
func (r *Request) Err() error {
	if r == nil {
		return fmt.Errorf("requests: nil request")
	}
	if r.err != nil {
		return r.err
	}
	if r.Path == "" {
		return fmt.Errorf("requests: %s request has an empty path", r.MethodOrGet())
	}
	if !validMethod(r.MethodOrGet()) {
		return fmt.Errorf("requests: invalid method %q for %s", r.Method, redact.RawURL(r.Path))
	}
	return nil
}

// MethodOrGet returns the method, or GET when it is empty.
func (r *Request) MethodOrGet() string {
	if r.Method == "" {
		return http.MethodGet
	}
	return r.Method
}

// Fail records err as the request's error; the engine then fails the request
// with it. Options use it to report values they cannot apply.
func (r *Request) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	return strings.IndexFunc(m, func(c rune) bool {
		return c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c)
	}) < 0
}

// WithQuery adds a query parameter.
func WithQuery(key, value string) Option {
	return func(r *Request) {
		if r.Query == nil {
			r.Query = url.Values{}
		}
		r.Query.Add(key, value)
	}
}

// WithHeader adds a request header.
func WithHeader(key, value string) Option {
	return func(r *Request) {
		if r.Header == nil {
			r.Header = http.Header{}
		}
		r.Header.Add(key, value)
	}
}

// WithSensitiveHeader adds a request header that carries a credential (an
// API key, say) and marks it sensitive: it is never sent on a redirect to
// another origin.
func WithSensitiveHeader(key, value string) Option {
	return func(r *Request) {
		if r.Header == nil {
			r.Header = http.Header{}
		}
		r.Header.Add(key, value)
		r.SensitiveHeaders = append(r.SensitiveHeaders, http.CanonicalHeaderKey(key))
	}
}

// WithBody sets the request body.
func WithBody(b Body) Option { return func(r *Request) { r.Body = b } }

// WithJSON sets the body to v encoded as JSON. An encoding error fails the
// request when it is submitted.
func WithJSON(v any) Option {
	return func(r *Request) {
		b, err := JSONBody(v)
		if err != nil {
			r.Fail(fmt.Errorf("requests: %s %s: %w", r.MethodOrGet(), redact.RawURL(r.Path), err))
			return
		}
		r.Body = b
	}
}

// WithBytes sets the body to b with the given content type.
func WithBytes(b []byte, contentType string) Option {
	return WithBody(BytesBody(b, contentType))
}

// WithForm sets the body to v URL-encoded.
func WithForm(v url.Values) Option { return WithBody(FormBody(v)) }

// WithoutAuth sends the request without the engine's token.
func WithoutAuth() Option { return func(r *Request) { r.NoAuth = true } }

// WithIdempotencyKey sends key as the Idempotency-Key header and lets the
// engine retry a POST or PATCH.
func WithIdempotencyKey(key string) Option {
	return func(r *Request) { r.IdempotencyKey = key }
}

// WithDedupKey merges the request with in-flight requests with the same key.
func WithDedupKey(key string) Option { return func(r *Request) { r.DedupKey = key } }

// WithoutDedup keeps the request apart from identical in-flight requests.
func WithoutDedup() Option { return func(r *Request) { r.NoDedup = true } }

// WithTimeout bounds each attempt of this request, body read included.
func WithTimeout(d time.Duration) Option {
	return func(r *Request) {
		if d < 0 {
			r.Fail(fmt.Errorf("requests: %s %s: negative timeout %s", r.MethodOrGet(), redact.RawURL(r.Path), d))
			return
		}
		r.Timeout = d
	}
}

// WithOutput streams the response body to w instead of Response.Body.
func WithOutput(w io.Writer) Option { return func(r *Request) { r.Output = w } }
