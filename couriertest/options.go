package couriertest

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Option configures an [API] or a [Server]. Options are applied in order;
// a later one of the same kind wins, except [WithFaults], which adds.
type Option func(*config)

// config is what the options set; after NewAPI it is never written.
type config struct {
	accessUses      int
	accessTTL       time.Duration
	now             func() time.Time
	username        string
	password        string
	clientID        string
	clientSecret    string
	noRotation      bool
	flakyPercent    int
	scripts         []*script
	rateLimit       int
	rateWindow      time.Duration
	items, pageSize int
	maxAge          time.Duration
	holdRefresh     func()
	refreshAnswered func()
}

func defaults() config {
	return config{
		now: time.Now, username: "demo", password: "demo",
		clientID: "demo-client", clientSecret: "demo-secret",
		items: 1000, pageSize: 10,
	}
}

// WithTokenUses makes every access token expire after it has served n
// requests: the (n+1)th request that carries it gets a 401. Zero, the
// default, sets no limit.
func WithTokenUses(n int) Option { return func(c *config) { c.accessUses = max(n, 0) } }

// WithTokenTTL makes every access token expire d after it was issued, by
// the server's clock (see [WithClock]); the token answers announce it as
// expires_in, in whole seconds. Zero, the default, sets no limit.
func WithTokenTTL(d time.Duration) Option { return func(c *config) { c.accessTTL = max(d, 0) } }

// WithClock sets the server's clock, which token lifetimes, Retry-After
// dates and rate-limit windows follow. If unset, or nil, time.Now. Inside a
// testing/synctest bubble time.Now is the bubble's virtual clock already.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.now = now
		}
	}
}

// WithLogin sets the username and password POST /auth/login accepts. If
// unset, "demo" and "demo".
func WithLogin(username, password string) Option {
	return func(c *config) { c.username, c.password = username, password }
}

// WithClient sets the OAuth 2.0 client POST /oauth/token accepts, as HTTP
// Basic credentials or client_id and client_secret form fields. If unset,
// "demo-client" and "demo-secret".
func WithClient(id, secret string) Option {
	return func(c *config) { c.clientID, c.clientSecret = id, secret }
}

// WithoutRotation makes a refresh answer with a new access token only,
// keeping the refresh token, as servers that do not rotate do. By default
// every refresh rotates the refresh token, and presenting a rotated one
// again revokes the session.
func WithoutRotation() Option { return func(c *config) { c.noRotation = true } }

// WithFlakyPercent makes GET /flaky/{id} fail its first attempt for that
// share (0 to 100) of ids, chosen by a hash of the id so that runs repeat:
// a 503 with Retry-After in seconds, a 503 with Retry-After as a date, or a
// 429 with Retry-After, one third each. The default is 0.
func WithFlakyPercent(p int) Option { return func(c *config) { c.flakyPercent = min(max(p, 0), 100) } }

// WithRateLimit limits the API to limit requests per window, in fixed
// windows of the server's clock (windows start at multiples of window
// since the Unix epoch). Every request but those of the token endpoints,
// /healthz and /stats counts. Each answer says the quota in the IETF
// fields, RateLimit: "default";r=REMAINING;t=SECONDS and RateLimit-Policy:
// "default";q=LIMIT;w=SECONDS; a request past the quota gets a 429 with a
// Retry-After of the seconds left in the window, rounded up. A limit of 0,
// the default, sets none.
func WithRateLimit(limit int, window time.Duration) Option {
	return func(c *config) {
		c.rateLimit, c.rateWindow = max(limit, 0), window
		if c.rateWindow <= 0 {
			c.rateWindow = time.Second
		}
	}
}

// WithItems sets how many items GET /items pages through, and how many a
// page holds when the request does not say (per_page or limit). If unset,
// 1000 items, 10 a page.
func WithItems(total, pageSize int) Option {
	return func(c *config) { c.items, c.pageSize = max(total, 0), max(pageSize, 1) }
}

// WithMaxAge makes the item endpoints send Cache-Control: max-age of d, in
// whole seconds, beside their ETag. By default they send an ETag alone.
func WithMaxAge(d time.Duration) Option { return func(c *config) { c.maxAge = max(d, 0) } }

// WithRefreshHold sets a function each refresh calls after it has rotated
// the refresh token (the old one is already spent) and before the answer
// is written. It may block, to hold the answer back: a test can stop a
// client while its refresh is in flight. It is called on the request's
// goroutine, so it must be safe for concurrent use.
func WithRefreshHold(hold func()) Option { return func(c *config) { c.holdRefresh = hold } }

// WithRefreshAnswered sets a function each refresh calls once its answer
// has been written and flushed to the client. It is called on the
// request's goroutine, so it must be safe for concurrent use.
func WithRefreshAnswered(fn func()) Option { return func(c *config) { c.refreshAnswered = fn } }

// WithFaults scripts the first answers to requests for pattern: the nth
// such request gets faults[n-1], and requests after the script get the
// real answer. A pattern is a path, optionally after a method and a space,
// as for [http.ServeMux]: "/items/7", "GET /items/7". A pattern that ends
// in a slash matches every path below it, and each path runs the script
// on its own: with "/items/" and one fault, the first request of every
// item fails. Faults come before everything else, the token check and the
// rate limit included (they do not use up a token), and may target the
// token endpoints too ("/auth/refresh"). WithFaults panics on a pattern
// that is not a path, as http.ServeMux does.
func WithFaults(pattern string, faults ...Fault) Option {
	sc := parseScript(pattern, faults)
	return func(c *config) {
		cp := *sc // each API counts its own requests
		c.scripts = append(c.scripts, &cp)
	}
}

func parseScript(pattern string, faults []Fault) *script {
	method, path, found := strings.Cut(pattern, " ")
	if !found {
		method, path = "", pattern
	}
	if !strings.HasPrefix(path, "/") || (method != "" && !validMethod(method)) {
		panic(fmt.Sprintf("couriertest: WithFaults: pattern %q is not [METHOD ]/path", pattern))
	}
	return &script{method: method, path: path, faults: append([]Fault(nil), faults...)}
}

func validMethod(m string) bool {
	for _, r := range m {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return m != "" && http.CanonicalHeaderKey(m) != ""
}
