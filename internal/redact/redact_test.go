package redact_test

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/courier-go/courier/internal/redact"
)

// Every URL courier writes into an error, a log line or a span attribute
// goes through redact.URL or redact.RawURL: user info, query and fragment
// never come out, whether the URL parses or not.
func TestRedactURL(t *testing.T) {
	const secret = "hunter2"
	for _, tc := range []struct {
		name, raw, want string
	}{
		{"user, password, query and fragment", "https://user:" + secret + "@api.example.com/v1/x?api_key=" + secret + "#" + secret, "https://api.example.com/v1/x"},
		{"user name alone", "https://" + secret + "@api.example.com/v1/x", "https://api.example.com/v1/x"},
		{"port and path stay", "http://127.0.0.1:8080/a/b", "http://127.0.0.1:8080/a/b"},
		{"empty query", "https://h/x?", "https://h/x"},
		{"query without a path", "https:///x?api_key=" + secret, "https:///x"},
		{"ftp with a password", "ftp://user:" + secret + "@host/x", "ftp://host/x"},
		{"redis password", "redis://:" + secret + "@h:1/0", "redis://h:1/0"},
		{"redis user and options", "redis://alice:" + secret + "@h:1/0?dial_timeout=1s&password=" + secret, "redis://h:1/0"},
		{"unix socket", "unix:///s.sock", "unix:///s.sock"},
		{"unix socket with a password", "unix://u:" + secret + "@/s.sock?db=1", "unix:///s.sock"},
		{"a path alone", "/v1/x", "/v1/x"},
		{"a path with a query", "/v1/x?api_key=" + secret + "#f", "/v1/x"},
		{"a path with an @", "/users/a@b.example?k=" + secret, "/users/a@b.example"},
		{"a relative path", "v1/x?api_key=" + secret, "v1/x"},
		{"a host without a scheme", "//user:" + secret + "@evil.example/x?k=" + secret, "//evil.example/x"},
		{"unparsable: bad escape", "https://user:" + secret + "@host/%zz?k=" + secret, "https://host/%zz"},
		{"unparsable: control character", "redis://:" + secret + "@local host\x7f", "redis://local host\x7f"},
		{"unparsable: fragment", "https://host/%zz#" + secret, "https://host/%zz"},
		// A password holding a '/' used to be taken for the authority's
		// end, and came out whole, when the URL did not parse.
		{"unparsable: password with a slash", "https://user:ab/" + secret + "@host/%zz", "https://host/%zz"},
		{"unparsable: password with a question mark", "https://user:ab?" + secret + "@host/%zz", "https://host/%zz"},
		{"unparsable: a path", "/x%zz?api_key=" + secret, "/x%zz"},
		{"unparsable: a host without a scheme", "//user:" + secret + "@host/%zz?k=" + secret, "//host/%zz"},
		{"unparsable: a relative path", "x%zz?api_key=" + secret, "<unparsable URL>"},
		{"not a URL at all", secret + "%zz", "<unparsable URL>"},
		{"no scheme before ://", "://" + secret + "%zz", "<unparsable URL>"},
		{"not a scheme before ://", secret + "%zz?x://h", "<unparsable URL>"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := redact.RawURL(tc.raw)
			assert.Equal(t, tc.want, got)
			assert.NotContains(t, got, secret)
			if u, err := url.Parse(tc.raw); err == nil {
				assert.Equal(t, tc.want, redact.URL(u), "RedactURL of the parsed URL")
			}
		})
	}
	assert.Empty(t, redact.URL(nil))
}
