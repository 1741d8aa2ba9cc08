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
