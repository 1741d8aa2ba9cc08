package engine

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Quota is what an answer's rate-limit header fields say about the
// client's quota, as read by [ParseRateLimit]. It is a plain value. The
// zero Quota does not mean "nothing known": it says the window has no
// request left. ParseRateLimit marks what an answer does not say with -1
// (Remaining, Limit) and HasReset false.
type Quota struct {
	// Remaining is how many requests the window has left, or -1 when the
	// answer does not say.
	Remaining int64
	// Reset is the time from now until the window resets (zero when it
	// has, or when HasReset is false).
	Reset    time.Duration
	HasReset bool
	// Limit and Window are the policy: Limit requests per Window. Limit is
	// -1 and Window zero when the answer does not say.
	Limit  int64
	Window time.Duration
	// Resource names the quota when the server keeps several
	// (X-RateLimit-Resource, as GitHub sends "core", "search", "graphql"),
	// empty when the answer does not say.
	Resource string
}

// maxQuotaReset bounds a reset time read from a header, so that a value
// that is not sane cannot overflow a duration.
const maxQuotaReset = 365 * 24 * time.Hour

// unixReset reports whether a reset value of v seconds is Unix time (as
// GitHub sends it) rather than seconds from now: it is when v is at least
// half of now's Unix time, for a wait of decades is no reset. (Half, not
// all: a reset a little in the past is still a time, and the bound holds
// for any clock that tests may start at, from 1973 on.)
func unixReset(v float64, now time.Time) bool {
	return v >= max(float64(now.Unix())/2, 1e8)
}

// ParseRateLimit reads the rate-limit header fields of an answer relative
// to now, and reports false when it has none that parse. It understands,
// first found wins:
//
//   - the IETF fields of draft-ietf-httpapi-ratelimit-headers:
//     `RateLimit: "default";r=0;t=30` (remaining r, reset in t seconds)
//     and `RateLimit-Policy: "default";q=100;w=60` (quota q per window of w
//     seconds); with several policies, the one with the fewest remaining
//     requests (then the latest reset) counts. The draft's earlier
//     dictionary form `RateLimit: limit=100, remaining=0, reset=30` is read
//     too;
//   - RateLimit-Remaining, RateLimit-Reset and RateLimit-Limit, the
//     separate fields of the earlier drafts;
//   - X-RateLimit-Remaining, X-RateLimit-Reset and X-RateLimit-Limit, as
//     GitHub and many others send them.
//
// A reset as large as Unix time is taken as Unix seconds, a smaller one as
// seconds from now (the IETF fields always mean seconds from now). A
// reset in the past is zero. X-RateLimit-Resource, when present, names
// the quota (Quota.Resource). Values that do not parse, are negative or are
// not finite are ignored, never trusted.
func ParseRateLimit(h http.Header, now time.Time) (Quota, bool) {
	if !hasRateLimitFields(h) {
		// Most answers carry none: skip the parsers and their allocations.
		return Quota{Remaining: -1, Limit: -1}, false
	}
	return parseRateLimit(h, now)
}

// parseRateLimit is ParseRateLimit for an h that has rate-limit fields.
func parseRateLimit(h http.Header, now time.Time) (Quota, bool) {
	q, ok := parseIETFRateLimit(h)
	for _, prefix := range []string{"Ratelimit-", "X-Ratelimit-"} {
		if ok {
			break
		}
		q, ok = parseRateLimitFields(h, prefix, now)
	}
	if !ok {
		return Quota{Remaining: -1, Limit: -1}, false
	}
	q.Resource = strings.TrimSpace(h.Get("X-Ratelimit-Resource"))
	return q, true
}

// hasRateLimitFields reports whether h has a field that ParseRateLimit
// reads: RateLimit, RateLimit-Policy, or one under the RateLimit- or
// X-RateLimit- prefix (h's keys are canonical, as net/http makes them).
func hasRateLimitFields(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, "Ratelimit") || strings.HasPrefix(k, "X-Ratelimit") {
			return true
		}
	}
	return false
}

// parseRateLimitFields reads the Remaining, Reset and Limit fields with
// the given (canonical) prefix.
func parseRateLimitFields(h http.Header, prefix string, now time.Time) (Quota, bool) {
	q := Quota{Remaining: -1, Limit: -1}
	found := false
	if n, ok := parseCount(h.Get(prefix + "Remaining")); ok {
		q.Remaining, found = n, true
	}
	if v := strings.TrimSpace(h.Get(prefix + "Reset")); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && !math.IsInf(f, 0) {
			if unixReset(f, now) {
				q.Reset = clampReset(time.Unix(int64(min(f, math.MaxInt64/2)), 0).Sub(now).Seconds())
			} else {
				q.Reset = clampReset(f)
			}
			q.HasReset, found = true, true
		}
	}
	if n, ok := parseCount(h.Get(prefix + "Limit")); ok {
		q.Limit, found = n, true
	}
	return q, found
}

// parseIETFRateLimit reads the RateLimit and RateLimit-Policy fields.
func parseIETFRateLimit(h http.Header) (Quota, bool) {
	limits := parseSFList(strings.Join(h.Values("Ratelimit"), ","))
	if len(limits) == 0 {
		return Quota{}, false
	}
	q := Quota{Remaining: -1, Limit: -1}
	name, found := "", false
	for _, it := range limits {
		r, rok := parseCount(it.param("r", "remaining"))
		t, tok := parseCount(it.param("t", "reset"))
		if !rok && !tok {
			continue
		}
		reset := time.Duration(-1)
		if tok {
			reset = clampReset(float64(t))
		}
		// The most restrictive policy: fewest remaining, then latest reset.
		better := !found ||
			(rok && (q.Remaining < 0 || r < q.Remaining)) ||
			(rok && r == q.Remaining && reset > q.Reset) ||
			(!rok && q.Remaining < 0 && reset > q.Reset)
		if !better {
			continue
		}
		found, name = true, it.name
		q.Remaining, q.Reset, q.HasReset = -1, 0, tok
		if rok {
			q.Remaining = r
		}
		if tok {
			q.Reset = reset
		}
		if n, ok := parseCount(it.param("limit")); ok {
			q.Limit = n // the dictionary form's limit
		}
	}
	if !found {
		return Quota{}, false
	}
	for _, it := range parseSFList(strings.Join(h.Values("Ratelimit-Policy"), ",")) {
		if it.name != name {
			continue
		}
		if n, ok := parseCount(it.param("q")); ok {
			q.Limit = n
		}
		if w, ok := parseCount(it.param("w")); ok && w > 0 {
			q.Window = clampReset(float64(w))
		}
		break
	}
	return q, true
}

// parseCount reads a non-negative integer, or reports false.
func parseCount(v string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// clampReset turns seconds into a duration in [0, maxQuotaReset].
func clampReset(sec float64) time.Duration {
	if !(sec > 0) { // NaN included
		return 0
	}
	if sec >= maxQuotaReset.Seconds() {
		return maxQuotaReset
	}
	return time.Duration(sec * float64(time.Second))
}

// sfItem is one member of a structured-field list (RFC 9651): its bare item
// as text (a string unquoted) and its parameters.
type sfItem struct {
	name   string
	params [][2]string
}

// param returns the value of the first parameter named one of keys.
func (it sfItem) param(keys ...string) string {
	for _, p := range it.params {
		for _, k := range keys {
			if p[0] == k {
				return p[1]
			}
		}
	}
	return ""
}

// parseSFList reads a structured-field list leniently: members separated
// by commas, each a bare item and ";key=value" parameters, strings in
// double quotes with backslash escapes. A member that is itself "key=value"
// (the dictionary form of the earlier drafts) becomes a parameter of one
// unnamed item shared by all such members. It never fails: what does not
// parse is skipped.
func parseSFList(v string) []sfItem {
	var items []sfItem
	dict := -1 // index of the unnamed item of dictionary members
	for _, member := range splitOutsideQuotes(v, ',') {
		parts := splitOutsideQuotes(member, ';')
		first := strings.TrimSpace(parts[0])
		if k, val, ok := strings.Cut(first, "="); ok && !strings.HasPrefix(first, `"`) {
			if dict < 0 {
				dict = len(items)
				items = append(items, sfItem{})
			}
			items[dict].params = append(items[dict].params, sfParam(k, val))
			continue
		}
		it := sfItem{name: unquote(first)}
		for _, p := range parts[1:] {
			k, val, _ := strings.Cut(p, "=")
			it.params = append(it.params, sfParam(k, val))
		}
		items = append(items, it)
	}
	return items
}

// sfParam is a parameter with its key in lower case and its value unquoted.
func sfParam(k, v string) [2]string {
	return [2]string{strings.ToLower(strings.TrimSpace(k)), unquote(strings.TrimSpace(v))}
}

// splitOutsideQuotes splits s at sep where sep is not inside a quoted
// string. It always returns at least one element.
func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unquote removes the quotes and escapes of a structured-field string; any
// other text is returned as it is.
func unquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	s = s[1 : len(s)-1]
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
