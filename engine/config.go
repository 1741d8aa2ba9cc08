package engine

import (
	"cmp"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-go/courier/requests"
)

// Defaults applied to zero fields of [Config].
const (
	DefaultWorkers          = 16
	DefaultQueueSize        = 1024
	DefaultTimeout          = 30 * time.Second
	DefaultMaxResponseBytes = 64 << 20
	DefaultMaxAttempts      = 3
	DefaultBaseDelay        = 100 * time.Millisecond
	DefaultMaxDelay         = 10 * time.Second
	DefaultMaxRetryAfter    = 60 * time.Second
	DefaultBudgetCapacity   = 500
	DefaultRetryCost        = 5
	DefaultTimeoutCost      = 10
	DefaultRefund           = 1
	DefaultRateDecrease     = 0.5
	DefaultRateIncrease     = 0.02
	DefaultMinRate          = 0.5
	DefaultRefreshAttempts  = 3
)

// Config configures an [Engine]. Every zero field means its documented
// default, so Config{BaseURL: u} is a working configuration; the zero
// Config is not, as BaseURL is required. A Config is a plain value: [New]
// copies what it needs, so one Config may serve several engines, and
// changing it afterwards has no effect on the engine.
type Config struct {
	// BaseURL is the API's absolute http or https URL. Request paths are
	// resolved against it, and its origin is the only one that receives the
	// token. A query in it is sent with every request given as a path; a
	// parameter the request sets itself keeps the request's values.
	// Required.
	BaseURL string

	// HTTPClient sends every attempt and every refresh. If nil, the engine
	// uses a client whose transport keeps at least Workers idle connections
	// per host. The engine uses a copy whose CheckRedirect also strips the
	// token on redirects to another origin; the caller's client is not
	// changed. Its Timeout, if any, applies on top of Config.Timeout.
	HTTPClient *http.Client

	// Workers is how many attempts run at once. If zero, DefaultWorkers.
	Workers int

	// QueueSize bounds how many admitted requests may wait for a worker. If
	// zero, DefaultQueueSize. When the queue is full, Submit waits for room
	// and TrySubmit fails with ErrQueueFull. Retries and replays of requests
	// already admitted always re-enter the queue.
	QueueSize int

	// Headers are sent with every request; a request's own headers win.
	Headers http.Header

	// SensitiveHeaders names headers that carry credentials: like
	// Authorization, Proxy-Authorization, Cookie and the token's header,
	// they are stripped when a redirect leaves the origin of the request,
	// and they keep requests apart in dedup. If nil,
	// DefaultSensitiveHeaders (X-Api-Key, Api-Key, X-Auth-Token); to add to
	// those, append to DefaultSensitiveHeaders. A request marks its own with
	// requests.Request.SensitiveHeaders.
	SensitiveHeaders []string

	// Timeout bounds each attempt, reading the body included. If zero,
	// DefaultTimeout. A request's own Timeout wins.
	Timeout time.Duration

	// Auth attaches tokens and refreshes them. The zero value sends no token.
	Auth Auth

	// Retry decides what is retried and how long to wait.
	Retry Retry

	// RateLimit paces attempts. The zero value does not limit.
	RateLimit RateLimit

	// Dedup merges identical in-flight requests.
	Dedup Dedup

	// Cache, if set, is a private HTTP cache (RFC 9111) for GET and HEAD
	// requests made with Submit, Do, Stream and Pages: answers with a
	// validator (ETag, Last-Modified) or explicit freshness (max-age,
	// Expires) are stored unless no-store; a fresh entry is served with
	// nothing sent (unless the request says Cache-Control: no-cache); a
	// stale one is revalidated with If-None-Match / If-Modified-Since, and
	// a 304 serves the stored answer with the 304's headers. Vary is
	// honoured. Entries are keyed like dedup: the method, the URL with its
	// query sorted and the credentials the caller set itself, never the
	// engine's token, so a refresh keeps them and two callers' entries
	// never mix. Response.Cache and Stats say what it did. If nil, there
	// is no cache. See [NewMemoryCache] and [NewFileCache]; package fleet
	// has one on Redis.
	Cache Cache
	// Breaker stops sending to a host whose attempts keep failing: see
	// [Breaker]. The zero value is off.
	Breaker Breaker

	// Hedge sends a second copy of an idempotent request's attempt that is
	// slow to answer: see [Hedge]. The zero value is off.
	Hedge Hedge

	// OnBreakerChange, if set, is told every change of state of every
	// circuit breaker (see [Breaker]): closed to open, open to half-open,
	// half-open to closed or open again. It is called as OnError is, from
	// the same goroutine, in order.
	OnBreakerChange func(BreakerChange)

	// MaxResponseBytes bounds the body read into memory. If zero,
	// DefaultMaxResponseBytes; longer bodies fail with ErrResponseTooLarge.
	// It counts the bytes as the transport hands them over, after it has
	// unpacked a compressed answer, so a gzip bomb meets it too. Reading a
	// body costs about its size, and a body past the limit about the limit.
	MaxResponseBytes int64

	// Middleware wraps the transport for every attempt, first element
	// outermost. Refresh calls bypass it.
	Middleware []Middleware

	// OnError, if set, sees every failed request once, after all its
	// attempts. It is called from one goroutine, in order of failure, and
	// may run after the future has resolved; a slow hook delays the hooks
	// after it, never a request (they wait in memory). Hooks (this one and
	// Auth's) may call any Engine method but Shutdown and Close, which wait
	// for the hooks to finish: call those from another goroutine.
	OnError func(req *requests.Request, err error)

	// Logger receives structured logs. If nil, nothing is logged. Tokens
	// and query strings are never logged.
	Logger *zerolog.Logger

	// Slog, if set, receives the engine's logs instead of Logger: the same
	// events, at the same levels (zerolog's debug, info, warn and error
	// are slog's), with the same fields, redacted alike. Events below the
	// lowest level its handler enables when New runs are never built (a
	// slog.LevelVar lowered later does not bring them back). If nil,
	// Logger is used.
	Slog *slog.Logger

	// Clock is the source of time for backoff, Retry-After, rate limiting,
	// breaker cooldowns and windows, hedge delays and proactive refresh.
	// If nil, SystemClock.
	Clock Clock

	// TracerProvider, if set, traces every request: a client span per
	// request with a child span per attempt (see [Engine.RoundTripper] for
	// the streamed path). If nil, no span is made.
	TracerProvider trace.TracerProvider

	// MeterProvider, if set, receives http.client.request.duration and
	// courier's own counters and gauges. If nil, nothing is measured.
	MeterProvider metric.MeterProvider

	// Propagator writes the trace context into every attempt's headers. If
	// nil and TracerProvider is set, the global one,
	// otel.GetTextMapPropagator(); if both are nil, nothing is written.
	Propagator propagation.TextMapPropagator
}

// Middleware wraps the transport that sends one attempt. It sees the request
// with the token attached and may change it or the response. A panic in a
// middleware fails only the request it happened in. [New] calls each
// Middleware once; the RoundTripper it returns is used by every worker at
// once, so it must be safe for concurrent use. A nil Middleware is refused
// by New.
type Middleware func(next http.RoundTripper) http.RoundTripper

// RoundTripperFunc is shorthand for an [http.RoundTripper] written as a
// function. It is as safe for concurrent use as the function is; a nil
// RoundTripperFunc panics when called.
type RoundTripperFunc func(*http.Request) (*http.Response, error)

// RoundTrip calls f(r).
func (f RoundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Retry configures retries. Policy and Backoff are replaceable one at a
// time. The zero value is three attempts with the default policy, backoff
// and budget. It is a plain value, part of a [Config].
type Retry struct {
	// MaxAttempts bounds the attempts made because attempts failed: the
	// first and its retries. If zero, DefaultMaxAttempts; 1 disables
	// retries. A replay after a token refresh (the request was rejected with
	// a token since replaced, and is sent again with the new one) is not a
	// retry and does not use it up: a request is replayed at most twice, so
	// it may take up to MaxAttempts+2 attempts in all. Response.Attempts and
	// the errors' Attempts count every attempt that reached the transport,
	// replays included.
	MaxAttempts int
	// Policy decides whether a failed attempt is retried. If nil,
	// DefaultRetryPolicy.
	Policy RetryPolicy
	// Backoff computes the wait before a retry when the server asked for
	// none. If nil, DefaultBackoff. Its answer is kept between zero and
	// MaxDelay.
	Backoff Backoff
	// BaseDelay and MaxDelay feed Backoff. If zero, DefaultBaseDelay and
	// DefaultMaxDelay.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// MaxRetryAfter caps the wait a Retry-After header may ask for. If zero,
	// DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Budget stops retry storms against a server that is down.
	Budget Budget
}

// Budget is the retry quota shared by every request of an engine, as the
// AWS SDKs' standard retry mode has it: a bucket of Capacity tokens that
// starts full. A retry takes RetryCost tokens out (TimeoutCost when the
// failed attempt timed out or its connection failed); a request that
// succeeds on its first attempt puts Refund back, and one that succeeds
// after retries puts back what its retries took. A retry the bucket cannot
// pay is not sent: the request fails with ErrRetryBudgetExhausted wrapping
// its last error.
//
// So a burst of ordinary flakiness is paid from the full bucket (100
// requests each failing once cost 500 and are refunded as they succeed),
// while n requests to a server that is down make at most
// n + Capacity/RetryCost upstream calls. The zero value is the default
// budget, on; each zero field means its default. A Budget is a plain value
// that configures the bucket; the bucket itself is the engine's own, never
// shared with another engine.
type Budget struct {
	// Capacity is the size of the bucket, and what it holds at the start.
	// If zero, DefaultBudgetCapacity.
	Capacity int
	// RetryCost is what a retry after an answer (a 503, say) takes. If
	// zero, DefaultRetryCost.
	RetryCost int
	// TimeoutCost is what a retry after an attempt that got no answer (a
	// timeout, a refused or reset connection) takes. If zero,
	// DefaultTimeoutCost.
	TimeoutCost int
	// Refund is what a request that succeeds on its first attempt puts
	// back. If zero, DefaultRefund.
	Refund int
	// Disabled turns the budget off: retries are limited by
	// Retry.MaxAttempts alone.
	Disabled bool
}

// RateLimit paces attempts with token buckets (golang.org/x/time/rate):
// a global limit over every attempt, a limit per host with overrides per
// host and per route, and holds and back-off that follow what the servers
// answer (see [Adaptive]). Every attempt waits, with its request's context,
// for the bucket of its host or route and then for the global one;
// retries and replays after a token refresh wait like first attempts.
//
// The zero value sets no limit of its own but adapts: a Retry-After or an
// exhausted quota holds the host, and 429s slow it down. A RateLimit is a
// plain value: [New] copies Hosts and Routes, and only the Limiter, if one
// is set, is shared.
type RateLimit struct {
	// PerSecond is the sustained rate of attempts over all hosts; 0 means
	// unlimited.
	PerSecond float64
	// Burst is how many attempts may go at once. If zero, the rate rounded
	// up, at least 1.
	Burst int

	// PerHost is the limit of each host that Hosts does not name. The zero
	// value does not limit hosts.
	PerHost Rate
	// Hosts overrides PerHost for the hosts it names. A key is a host as
	// it appears in request URLs, with its port when it has one
	// ("api.example.com", "127.0.0.1:8080"); case does not matter, and a
	// port that is the scheme's default is the same as none. A zero Rate
	// leaves its host unlimited.
	Hosts map[string]Rate
	// Routes override their host's limit for requests whose path starts
	// with Prefix (at a "/" boundary: "/search" covers "/search" and
	// "/search/code", not "/searches"); the longest prefix wins. A route
	// has its own bucket, holds and back-off, apart from its host's.
	Routes []Route

	// Adaptive configures how limits follow the servers' answers.
	Adaptive Adaptive

	// Limiter is where attempts wait and holds are published. If nil,
	// [NewLocalLimiter] on the engine's Clock: limits and holds are this
	// engine's own. A shared Limiter makes them fleet-wide.
	Limiter Limiter
}

// Rate is a token-bucket limit: PerSecond attempts a second on average, up
// to Burst at once. The zero value does not limit. It is a plain value.
type Rate struct {
	// PerSecond is the sustained rate; 0 means unlimited.
	PerSecond float64
	// Burst is how many attempts may go at once. If zero, the rate rounded
	// up, at least 1.
	Burst int
}

// Route is a limit for the requests to Host whose path starts with Prefix.
// It is a plain value. The zero Route names no host, and [New] refuses it.
type Route struct {
	// Host is as in [RateLimit.Hosts].
	Host string
	// Prefix starts with "/".
	Prefix string
	Rate   Rate
}

// Adaptive makes every host's limit follow its answers. The zero value is
// on, with the defaults below. It is a plain value; what it learns is the
// engine's (or its Limiter's) state, not the Adaptive's.
//
// Holds: a Retry-After on a 429 holds every request to that host (or to
// that route, when the request fell under a route override), and one on a
// 503 every request to that path, until the time it gives, capped at
// Retry.MaxRetryAfter (HoldScope changes what is held). A quota at zero in
// the answer's rate-limit fields (see [ParseRateLimit]) holds the host (or
// route) until the quota resets, whatever the status and whether or not
// Retry-After is there too, capped the same way: after the cap, one attempt
// learns the quota afresh. Each answer's quota replaces the one before it.
// A quota of a named resource (X-RateLimit-Resource, as GitHub sends "core"
// and "search") is kept apart: when it is spent it holds only the requests
// whose path (its first two segments) last had an answer naming it, so a
// spent "search" quota never holds "core" requests. While a quota is
// known, no more attempts start before its reset than it has left.
// Holds are logged at warn level when they are capped.
//
// Back-off (AIMD): a 429 multiplies the rate of its host or route by
// Decrease (once for the attempts that were already in flight together),
// down to MinPerSecond, and each 2xx answer adds Increase times the
// ceiling back, up to the ceiling: the configured limit. A host with no
// configured limit is not paced until its first 429; then its ceiling is
// learned: the quota of its RateLimit-Policy when it sends one, else the
// rate of 2xx answers observed from it since it was first seen (or since
// its last hold ended) up to the end of the new hold. It starts there,
// since the hold has already waited out the excess, and adapts from
// there. A host idle for ten minutes forgets what was learned.
type Adaptive struct {
	// Disabled ignores what answers say about limits: no holds, no
	// pacing to quotas, no back-off. A Retry-After still delays the retry
	// of the request it came with.
	Disabled bool
	// HoldScope says what a Retry-After holds. The zero value, HoldAuto,
	// holds what the status speaks for: a 429 (the client is too fast)
	// the host, a 503 (one endpoint is unwell) the request's path.
	HoldScope HoldScope
	// Decrease is the factor a 429 multiplies the rate by, in (0, 1). If
	// zero, DefaultRateDecrease.
	Decrease float64
	// Increase is the share of the ceiling each 2xx answer adds back, in
	// (0, 1]. If zero, DefaultRateIncrease.
	Increase float64
	// MinPerSecond is the lowest rate back-off goes to. If zero,
	// DefaultMinRate.
	MinPerSecond float64
}

// HoldScope says what a Retry-After holds: the request's host (or the
// route override its path falls under), or its path alone. Quotas at zero
// hold the host or route whatever the scope, since a quota is the host's.
// The zero value is [HoldAuto].
type HoldScope int

const (
	// HoldAuto holds the host after a 429 and the path after a 503.
	HoldAuto HoldScope = iota
	// HoldHost holds the host (or route override) after a 429 or a 503.
	HoldHost
	// HoldRoute holds the request's path alone after a 429 or a 503.
	HoldRoute
)

// String returns "auto", "host" or "route".
func (s HoldScope) String() string {
	switch s {
	case HoldAuto:
		return "auto"
	case HoldHost:
		return "host"
	case HoldRoute:
		return "route"
	}
	return fmt.Sprintf("HoldScope(%d)", int(s))
}

// ParseHoldScope reads "auto", "host" or "route".
func ParseHoldScope(v string) (HoldScope, error) {
	for _, s := range []HoldScope{HoldAuto, HoldHost, HoldRoute} {
		if v == s.String() {
			return s, nil
		}
	}
	return 0, fmt.Errorf("hold scope %q: want auto, host or route", v)
}

// Dedup configures in-flight merging of identical requests. The zero value
// merges identical GET and HEAD requests and keyed requests of any method.
// It is a plain value.
type Dedup struct {
	// Disabled sends every request on its own.
	Disabled bool
}

// settings is a validated Config with every default applied.
type settings struct {
	Config
	base       *url.URL
	refreshURL *url.URL // Auth.Refresh.Path resolved (refreshEndpoint); nil without Auth.Refresh
	origin     string
	authHeader string
	authPrefix string   // scheme plus space, or ""
	sensitive  []string // canonical names of the headers that carry credentials
	// systemClock is set when Clock is SystemClock: its time is real time,
	// which attempt deadlines need, so one reading serves both.
	systemClock bool
}

func (c Config) validate() (*settings, error) {
	s := &settings{Config: c}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	u, err := url.Parse(c.BaseURL)
	switch {
	case c.BaseURL == "":
		bad("BaseURL is empty")
	case err != nil:
		bad("BaseURL %q: %v", redactRef(c.BaseURL), redactErr(err))
	case u.Scheme != "http" && u.Scheme != "https":
		bad("BaseURL %q: scheme must be http or https", redactRef(c.BaseURL))
	case u.Host == "":
		bad("BaseURL %q: no host", redactRef(c.BaseURL))
	default:
		s.base = u
		s.origin = origin(u)
	}
	nonNeg := func(name string, v int64) {
		if v < 0 {
			bad("%s is negative (%d)", name, v)
		}
	}
	nonNeg("Workers", int64(c.Workers))
	nonNeg("QueueSize", int64(c.QueueSize))
	nonNeg("Timeout", int64(c.Timeout))
	nonNeg("MaxResponseBytes", c.MaxResponseBytes)
	nonNeg("Retry.MaxAttempts", int64(c.Retry.MaxAttempts))
	nonNeg("Retry.BaseDelay", int64(c.Retry.BaseDelay))
	nonNeg("Retry.MaxDelay", int64(c.Retry.MaxDelay))
	nonNeg("Retry.MaxRetryAfter", int64(c.Retry.MaxRetryAfter))
	nonNeg("Retry.Budget.Capacity", int64(c.Retry.Budget.Capacity))
	nonNeg("Retry.Budget.RetryCost", int64(c.Retry.Budget.RetryCost))
	nonNeg("Retry.Budget.TimeoutCost", int64(c.Retry.Budget.TimeoutCost))
	nonNeg("Retry.Budget.Refund", int64(c.Retry.Budget.Refund))
	nonNeg("Auth.RefreshBefore", int64(c.Auth.RefreshBefore))
	nonNeg("Auth.LockLease", int64(c.Auth.LockLease))
	c.RateLimit.check(bad)
	c.Breaker.check(bad)
	c.Hedge.check(bad)
	if c.Retry.BaseDelay > 0 && c.Retry.MaxDelay > 0 && c.Retry.BaseDelay > c.Retry.MaxDelay {
		bad("Retry.BaseDelay (%s) is above Retry.MaxDelay (%s)", c.Retry.BaseDelay, c.Retry.MaxDelay)
	}
	for i, m := range c.Middleware {
		if m == nil {
			bad("Middleware[%d] is nil", i)
		}
	}
	for _, k := range c.SensitiveHeaders {
		if !validHeaderName(k) {
			bad("SensitiveHeaders: invalid header name %q", k)
		}
	}
	for k, vs := range c.Headers {
		if !validHeaderName(k) {
			bad("Headers: invalid header name %q", k)
		}
		for _, v := range vs {
			if !validHeaderValue(v) {
				bad("Headers: value of %q contains a control character", k)
			}
		}
	}

	a := c.Auth
	if a.Header != "" && !validHeaderName(a.Header) {
		bad("Auth.Header %q is not a valid header name", a.Header)
	}
	if strings.ContainsAny(a.AccessToken+a.Scheme, "\r\n") {
		bad("Auth.AccessToken or Auth.Scheme contains a line break")
	}
	var providers []string
	for name, set := range map[string]bool{"Auth.Refresh": a.Refresh != nil, "Auth.Refresher": a.Refresher != nil, "Auth.TokenSource": a.TokenSource != nil} {
		if set {
			providers = append(providers, name)
		}
	}
	if len(providers) > 1 {
		slices.Sort(providers)
		bad("%s are both set; choose one", strings.Join(providers, " and "))
	}
	if r := a.Refresh; r != nil {
		switch {
		case r.Path == "":
			bad("Auth.Refresh.Path is empty")
		case s.base != nil:
			u, err := refreshEndpoint(s.base, r.Path)
			if err != nil {
				bad("Auth.Refresh.Path %q: %v", redactRef(r.Path), err)
			}
			s.refreshURL = u
		}
		if r.Method != "" && !validHeaderName(r.Method) {
			bad("Auth.Refresh.Method %q is not an HTTP method", r.Method)
		}
		if r.ClientAuth != ClientAuthBasic && r.ClientAuth != ClientAuthPost {
			bad("Auth.Refresh.ClientAuth %d is unknown", r.ClientAuth)
		}
		switch r.Grant {
		case "", GrantRefreshToken:
		case GrantClientCredentials:
			if r.ClientID == "" {
				bad("Auth.Refresh.Grant is client_credentials but ClientID is empty")
			}
		default:
			bad("Auth.Refresh.Grant %q is unknown: want refresh_token or client_credentials", r.Grant)
		}
		for i, sc := range r.Scopes {
			if sc == "" || strings.ContainsAny(sc, " \t\r\n\"\\") {
				bad("Auth.Refresh.Scopes[%d] %q is not a scope token", i, sc)
			}
		}
		if r.ClientAuth == ClientAuthPost && !r.Form && r.ClientID != "" && r.Grant != GrantClientCredentials {
			bad("Auth.Refresh.ClientAuth is ClientAuthPost but Form is off: client credentials go in the form")
		}
		nonNeg("Auth.Refresh.MaxAttempts", int64(r.MaxAttempts))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("courier: invalid config: %s", strings.Join(problems, "; "))
	}

	// Maps are shared by reference: New keeps copies of its own, so a
	// caller changing them afterwards changes nothing and races with no
	// worker.
	s.Headers = c.Headers.Clone()
	s.Breaker.Hosts = maps.Clone(c.Breaker.Hosts)
	s.Breaker.Routes = slices.Clone(c.Breaker.Routes)
	s.Hedge.Hosts = maps.Clone(c.Hedge.Hosts)
	s.Hedge.Routes = slices.Clone(c.Hedge.Routes)
	if s.Workers == 0 {
		s.Workers = DefaultWorkers
	}
	if s.QueueSize == 0 {
		s.QueueSize = DefaultQueueSize
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.MaxResponseBytes == 0 {
		s.MaxResponseBytes = DefaultMaxResponseBytes
	}
	r := &s.Retry
	if r.MaxAttempts == 0 {
		r.MaxAttempts = DefaultMaxAttempts
	}
	if r.Policy == nil {
		r.Policy = DefaultRetryPolicy
	}
	if r.Backoff == nil {
		r.Backoff = DefaultBackoff
	}
	if r.BaseDelay == 0 {
		r.BaseDelay = DefaultBaseDelay
	}
	if r.MaxDelay == 0 {
		r.MaxDelay = max(DefaultMaxDelay, r.BaseDelay)
	}
	if r.MaxRetryAfter == 0 {
		r.MaxRetryAfter = DefaultMaxRetryAfter
	}
	b := &r.Budget
	b.Capacity = cmp.Or(b.Capacity, DefaultBudgetCapacity)
	b.RetryCost = cmp.Or(b.RetryCost, DefaultRetryCost)
	b.TimeoutCost = cmp.Or(b.TimeoutCost, DefaultTimeoutCost)
	b.Refund = cmp.Or(b.Refund, DefaultRefund)
	if s.Clock == nil {
		s.Clock = SystemClock
	}
	_, s.systemClock = s.Clock.(systemClock)
	if s.Slog != nil {
		l := slogLogger(s.Slog)
		s.Logger = &l
	}
	if s.Logger == nil {
		nop := zerolog.Nop()
		s.Logger = &nop
	}
	if s.Auth.AuthFailed == nil {
		s.Auth.AuthFailed = DefaultAuthFailed
	}
	s.authHeader = http.CanonicalHeaderKey(a.Header)
	if s.authHeader == "" {
		s.authHeader = "Authorization"
	}
	scheme := a.Scheme
	if scheme == "" && s.authHeader == "Authorization" {
		scheme = "Bearer"
	}
	if scheme != "" {
		s.authPrefix = scheme + " "
	}
	s.sensitive = s.sensitiveHeaders()
	if rc := a.Refresh; rc != nil {
		cp := *rc
		if cp.Method == "" {
			cp.Method = http.MethodPost
		}
		if cp.Grant == "" {
			cp.Grant = GrantRefreshToken
		}
		if cp.Grant == GrantClientCredentials {
			cp.Form = true
		}
		cp.Scopes = slices.Clone(cp.Scopes)
		cp.Headers = cp.Headers.Clone()
		cp.Body = maps.Clone(cp.Body) // one level deep: values are the caller's
		if cp.AccessTokenField == "" {
			cp.AccessTokenField = "access_token"
		}
		if cp.RefreshTokenField == "" {
			cp.RefreshTokenField = "refresh_token"
		}
		if cp.Parser == nil {
			cp.Parser = FieldTokenParser(cp.AccessTokenField, cp.RefreshTokenField)
		}
		if cp.MaxAttempts == 0 {
			cp.MaxAttempts = DefaultRefreshAttempts
		}
		s.Auth.Refresh = &cp
	}
	return s, nil
}

// canRefresh reports whether a rejected token can be refreshed at all.
func (s *settings) canRefresh() bool {
	return s.Auth.Refresh != nil || s.Auth.Refresher != nil || s.Auth.TokenSource != nil
}

// needsRefreshToken reports whether a refresh needs a refresh token: not
// for the client-credentials grant, nor for a token source.
func (s *settings) needsRefreshToken() bool {
	if s.Auth.TokenSource != nil {
		return false
	}
	return s.Auth.Refresh == nil || s.Auth.Refresh.Grant != GrantClientCredentials
}

// refreshBound bounds one refresh with its retries: each attempt's
// timeout and the longest pauses between them.
func (s *settings) refreshBound() time.Duration {
	attempts := DefaultRefreshAttempts
	if s.Auth.Refresh != nil {
		attempts = s.Auth.Refresh.MaxAttempts
	}
	return time.Duration(attempts)*(s.Timeout+s.Retry.MaxDelay) + s.Timeout
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

func origin(u *url.URL) string {
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + host + ":" + port
}
