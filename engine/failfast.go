package engine

import (
	"crypto/tls"
	"crypto/x509"
	"strings"

	"github.com/courier-go/courier/errors"
)

// Failures that no retry can fix. The engine fails them at the first
// attempt, with their cause, whatever the retry policy says: a certificate
// that does not verify will not verify in a second, a header value the
// transport refuses is refused again, and a redirect loop loops again.

// cannotSucceed reports whether err, a failed attempt's or a refresh call's
// transport error, would fail the same way on every retry.
func cannotSucceed(err error) bool {
	if err == nil {
		return false
	}
	var (
		redirect   *redirectError
		verify     *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		roots      x509.SystemRootsError
		notTLS     tls.RecordHeaderError
		badHeader  *invalidHeaderError
		constraint x509.ConstraintViolationError
	)
	switch {
	case errors.As(err, &redirect), errors.As(err, &verify), errors.As(err, &unknownCA),
		errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &roots),
		errors.As(err, &notTLS), errors.As(err, &badHeader), errors.As(err, &constraint):
		return true
	}
	// net/http refuses header fields it cannot send with errors of no type
	// of their own (a token or a middleware's header, say).
	msg := err.Error()
	return strings.Contains(msg, "net/http: invalid header field") ||
		strings.Contains(msg, "server gave HTTP response to HTTPS client")
}

// invalidHeaderError is a header that cannot be sent: its name is not an
// HTTP token, or its value holds a control character.
type invalidHeaderError struct {
	name  string
	value bool // the value is at fault, not the name
}

func (e *invalidHeaderError) Error() string {
	if e.value {
		return "invalid value for header " + quoteName(e.name) + ": control character"
	}
	return "invalid header name " + quoteName(e.name)
}

func quoteName(k string) string {
	if validHeaderName(k) {
		return k
	}
	return strings.ToValidUTF8(strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, k), "?")
}

// checkHeaders returns an error naming the first header of h that cannot
// be sent.
func checkHeaders(h map[string][]string) error {
	for k, vs := range h {
		if !validHeaderName(k) {
			return &invalidHeaderError{name: k}
		}
		for _, v := range vs {
			if !validHeaderValue(v) {
				return &invalidHeaderError{name: k, value: true}
			}
		}
	}
	return nil
}

// validHeaderValue reports whether v may be sent as a field value (RFC 9110
// section 5.5): no control characters but horizontal tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
