package engine

import (
	"net/url"
	"strings"

	"github.com/courier-go/courier/internal/redact"
)

// Redaction of URLs in errors and log lines. Query strings and user info
// often carry credentials (?api_key=..., https://user:pass@host), and
// net/http's errors quote the full URL of the request they are about: the
// request's own, a redirect's Location, or the refresh endpoint's. Every
// error that leaves the engine or reaches a log line goes through
// redactErr. What a redacted URL keeps is redact.URL's policy.

// redactErr returns err with every http(s) URL in its message cut down to
// scheme, host and path, and with the URL of every *url.Error in its chain
// redacted the same way. It unwraps to err, so errors.Is and errors.As see
// the same chain. It returns err itself when its message has nothing to
// hide.
func redactErr(err error) error {
	if err == nil {
		return nil
	}
	scrubURLErrors(err)
	msg := err.Error()
	red := redactText(msg)
	if red == msg {
		return err
	}
	return &redactedError{msg: red, err: err}
}

// redactedError is an error whose message has been redacted.
type redactedError struct {
	msg string
	err error
}

func (r *redactedError) Error() string { return r.msg }
func (r *redactedError) Unwrap() error { return r.err }

// scrubURLErrors redacts the URL field of every *url.Error in err's chain.
// net/http makes a new one for every call, so changing it in place touches
// nobody else's value.
func scrubURLErrors(err error) {
	for err != nil {
		if ue, ok := err.(*url.Error); ok {
			ue.URL = redact.RawURL(ue.URL)
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				scrubURLErrors(e)
			}
			return
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return
		}
	}
}

// redactText redacts every http:// and https:// URL in s. A URL ends at
// white space or at a quote, as net/http quotes them.
func redactText(s string) string {
	lower := strings.ToLower(s)
	if !strings.Contains(lower, "http://") && !strings.Contains(lower, "https://") {
		return s
	}
	var b strings.Builder
	for {
		i := urlStart(lower)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + strings.IndexAny(s[i:]+" ", " \t\r\n\"'`<>")
		b.WriteString(s[:i])
		b.WriteString(redact.RawURL(s[i:end]))
		s, lower = s[end:], lower[end:]
	}
}

func urlStart(lower string) int {
	i, j := strings.Index(lower, "http://"), strings.Index(lower, "https://")
	switch {
	case i < 0:
		return j
	case j < 0:
		return i
	}
	return min(i, j)
}

// redactRef returns a request path (or URL) for an error message: without
// its query, fragment or user info.
func redactRef(p string) string { return redact.RawURL(p) }
