// Package redact is courier's one policy for every URL it writes into an
// error, a log line or a span attribute: no user info, no query, no
// fragment, whether the URL parses or not.
package redact

import (
	"net/url"
	"strings"
)

// Redaction of URLs: one policy for every URL that courier writes into an
// error, a log line or a span attribute. User info and query strings often
// carry credentials (https://user:pass@host, ?api_key=...,
// redis://:password@host), so neither is ever written, in any form.

// unparsable is what [RawURL] gives for a string that is neither a URL
// nor shaped like one.
const unparsable = "<unparsable URL>"

// URL returns u as a string for an error message, a log line or a span
// attribute, without the parts of a URL that carry secrets: it removes the
// user info (user name and password alike), the whole query (names and
// values) and the fragment, and keeps the scheme, host, port and path. A nil
// u gives "". A secret written into the path itself is not recognised.
//
// Every URL in courier's errors (errors.HTTPError.URL,
// errors.RequestError.URL) has been through URL or [RawURL].
func URL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.RawQuery, c.ForceQuery = "", false
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// RawURL is [URL] for a URL or a path held in a string: one
// quoted by another library's error, typed by a user, or a request's path
// (which may be a whole URL). A string that does not parse is cut down by
// hand, erring on the side of removing too much:
//
//   - after a "scheme://" or a leading "//", everything up to the last '@'
//     goes (user info, even one holding a '/', '?' or '#' that a URL may
//     not);
//   - everything from the first '?' or '#' goes;
//   - a string shaped like neither a URL nor a path (no "scheme://", no
//     leading '/') may be a secret typed in the wrong place: it is
//     replaced whole by "<unparsable URL>".
func RawURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return URL(u)
	}
	authority, rest := "", raw
	if scheme, after, ok := strings.Cut(raw, "://"); ok && isScheme(scheme) {
		authority, rest = scheme+"://", after
	} else if after, ok := strings.CutPrefix(raw, "//"); ok {
		authority, rest = "//", after
	} else if !strings.HasPrefix(raw, "/") {
		return unparsable
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 && authority != "" {
		rest = rest[at+1:]
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	return authority + rest
}

// isScheme reports whether s is a URL scheme as RFC 3986 section 3.1 spells
// one: a letter, then letters, digits, '+', '-' or '.'.
func isScheme(s string) bool {
	for i, r := range s {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case i > 0 && ('0' <= r && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return s != ""
}
