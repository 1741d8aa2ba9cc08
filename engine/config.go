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

// validate checks c, section by section, naming every problem it finds,
// and returns it with every default applied.
func (c Config) validate() (*settings, error) {
	s := &settings{Config: c}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	s.base, s.origin = checkBaseURL(c.BaseURL, bad)
	c.checkEngine(bad)
	c.Retry.check(bad)
	s.refreshURL = c.Auth.check(s.base, bad)
	c.RateLimit.check(bad)
	c.Breaker.check(bad)
	c.Hedge.check(bad)
	if len(problems) > 0 {
		return nil, fmt.Errorf("courier: invalid config: %s", strings.Join(problems, "; "))
	}
	s.engineDefaults()
	s.Retry.defaults()
	s.authDefaults()
	return s, nil
}

// nonNeg reports a negative v as a problem of the field name.
func nonNeg(bad func(string, ...any), name string, v int64) {
	if v < 0 {
		bad("%s is negative (%d)", name, v)
	}
}

// checkBaseURL parses the base URL; nil when it is not usable.
func checkBaseURL(raw string, bad func(string, ...any)) (*url.URL, string) {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		bad("BaseURL is empty")
	case err != nil:
		bad("BaseURL %q: %v", redactRef(raw), redactErr(err))
	case u.Scheme != "http" && u.Scheme != "https":
		bad("BaseURL %q: scheme must be http or https", redactRef(raw))
	case u.Host == "":
		bad("BaseURL %q: no host", redactRef(raw))
	default:
		return u, origin(u)
	}
	return nil, ""
}

// checkEngine checks the engine's own fields: its sizes and bounds, its
// middleware and headers.
func (c Config) checkEngine(bad func(string, ...any)) {
	nonNeg(bad, "Workers", int64(c.Workers))
	nonNeg(bad, "QueueSize", int64(c.QueueSize))
	nonNeg(bad, "Timeout", int64(c.Timeout))
	nonNeg(bad, "MaxResponseBytes", c.MaxResponseBytes)
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
}

// engineDefaults applies the engine's defaults to a checked config, and
// copies what it shares by reference: the engine keeps copies of its own,
// so a caller changing them afterwards changes nothing and races with no
// worker.
func (s *settings) engineDefaults() {
	s.Headers = s.Config.Headers.Clone()
	s.Breaker.Hosts = maps.Clone(s.Breaker.Hosts)
	s.Breaker.Routes = slices.Clone(s.Breaker.Routes)
	s.Hedge.Hosts = maps.Clone(s.Hedge.Hosts)
	s.Hedge.Routes = slices.Clone(s.Hedge.Routes)
	s.Workers = cmp.Or(s.Workers, DefaultWorkers)
	s.QueueSize = cmp.Or(s.QueueSize, DefaultQueueSize)
	s.Timeout = cmp.Or(s.Timeout, DefaultTimeout)
	s.MaxResponseBytes = cmp.Or(s.MaxResponseBytes, DefaultMaxResponseBytes)
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
}

// check checks the retry settings.
func (r Retry) check(bad func(string, ...any)) {
	nonNeg(bad, "Retry.MaxAttempts", int64(r.MaxAttempts))
	nonNeg(bad, "Retry.BaseDelay", int64(r.BaseDelay))
	nonNeg(bad, "Retry.MaxDelay", int64(r.MaxDelay))
	nonNeg(bad, "Retry.MaxRetryAfter", int64(r.MaxRetryAfter))
	nonNeg(bad, "Retry.Budget.Capacity", int64(r.Budget.Capacity))
	nonNeg(bad, "Retry.Budget.RetryCost", int64(r.Budget.RetryCost))
	nonNeg(bad, "Retry.Budget.TimeoutCost", int64(r.Budget.TimeoutCost))
	nonNeg(bad, "Retry.Budget.Refund", int64(r.Budget.Refund))
	if r.BaseDelay > 0 && r.MaxDelay > 0 && r.BaseDelay > r.MaxDelay {
		bad("Retry.BaseDelay (%s) is above Retry.MaxDelay (%s)", r.BaseDelay, r.MaxDelay)
	}
}

// defaults applies the retry defaults to checked settings.
func (r *Retry) defaults() {
	r.MaxAttempts = cmp.Or(r.MaxAttempts, DefaultMaxAttempts)
	if r.Policy == nil {
		r.Policy = DefaultRetryPolicy
	}
	if r.Backoff == nil {
		r.Backoff = DefaultBackoff
	}
	r.BaseDelay = cmp.Or(r.BaseDelay, DefaultBaseDelay)
	if r.MaxDelay == 0 {
		r.MaxDelay = max(DefaultMaxDelay, r.BaseDelay)
	}
	r.MaxRetryAfter = cmp.Or(r.MaxRetryAfter, DefaultMaxRetryAfter)
	b := &r.Budget
	b.Capacity = cmp.Or(b.Capacity, DefaultBudgetCapacity)
	b.RetryCost = cmp.Or(b.RetryCost, DefaultRetryCost)
	b.TimeoutCost = cmp.Or(b.TimeoutCost, DefaultTimeoutCost)
	b.Refund = cmp.Or(b.Refund, DefaultRefund)
}

// check checks the session's settings and returns the refresh endpoint
// resolved against base (nil without Auth.Refresh, or when base is not
// usable).
func (a Auth) check(base *url.URL, bad func(string, ...any)) (refreshURL *url.URL) {
	nonNeg(bad, "Auth.RefreshBefore", int64(a.RefreshBefore))
	nonNeg(bad, "Auth.LockLease", int64(a.LockLease))
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
		refreshURL = r.check(base, bad)
	}
	return refreshURL
}

// check checks the refresh endpoint's settings and returns its URL.
func (r *RefreshConfig) check(base *url.URL, bad func(string, ...any)) (endpoint *url.URL) {
	switch {
	case r.Path == "":
		bad("Auth.Refresh.Path is empty")
	case base != nil:
		u, err := refreshEndpoint(base, r.Path)
		if err != nil {
			bad("Auth.Refresh.Path %q: %v", redactRef(r.Path), err)
		}
		endpoint = u
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
	nonNeg(bad, "Auth.Refresh.MaxAttempts", int64(r.MaxAttempts))
	return endpoint
}

// authDefaults applies the session's defaults to checked settings: the
// header and scheme, the credentials' header names, and a copy of the
// refresh endpoint's settings with their defaults.
func (s *settings) authDefaults() {
	a := &s.Auth
	if a.AuthFailed == nil {
		a.AuthFailed = DefaultAuthFailed
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
		cp.MaxAttempts = cmp.Or(cp.MaxAttempts, DefaultRefreshAttempts)
		a.Refresh = &cp
	}
}
