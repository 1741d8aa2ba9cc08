package engine

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/redact"
	"github.com/courier-go/courier/requests"
)

// OpenTelemetry, through its API only: the application brings the SDK.
//
// Traces: a client span per request (per future, dedup followers
// included), from Submit to its resolution, named by the method, with the
// HTTP semantic-convention attributes; a child client span per attempt,
// whose context goes out in the attempt's headers through the propagator;
// events on the request's span when it is parked for a refresh, when a
// retry is scheduled, and when it joins an identical request in flight.
//
// Metrics: http.client.request.duration per attempt (each attempt is one
// HTTP request on the wire), and courier's own instruments, listed in
// newTelemetry.
//
// No attribute ever holds a token, a header value or a query string: URLs
// are recorded without user info, and with the query replaced by REDACTED.
//
// The hooks are methods on *telemetry that return at once on a nil
// receiver, which is what an engine without a TracerProvider, a
// MeterProvider or a Propagator has: the default costs a nil check.

// instrumentation is the name the engine's tracer and meter carry.
const instrumentation = "github.com/courier-go/courier/engine"

// Event names on a request's span.
const (
	EventParked      = "parked for refresh"
	EventRetry       = "retry scheduled"
	EventDedupJoined = "dedup joined"
)

// Attribute keys of courier's own, for events and metrics.
const (
	AttrRetryDelay     = attribute.Key("courier.retry.delay")     // seconds, float
	AttrRetryReason    = attribute.Key("courier.retry.reason")    // status code, "timeout" or "transport"
	AttrRefreshOutcome = attribute.Key("courier.refresh.outcome") // "success", "failure" or "refused"
	AttrTokenGen       = attribute.Key("courier.token.generation")
	AttrAttempt        = attribute.Key("courier.attempt") // 1-based
)

// durationBuckets are the semantic conventions' advice for
// http.client.request.duration, in seconds.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// telemetry holds the engine's tracer, propagator and instruments. It is
// built once by New and read-only after; nil means none of them.
type telemetry struct {
	tracer trace.Tracer                  // nil: no spans
	prop   propagation.TextMapPropagator // nil: nothing injected

	metrics        bool // the instruments below are set
	duration       metric.Float64Histogram
	attempts       metric.Int64Counter
	retries        metric.Int64Counter
	refreshes      metric.Int64Counter
	dedupHits      metric.Int64Counter
	expiries       metric.Int64Counter
	budgetRefusals metric.Int64Counter
	// gauges observes queue depth, in-flight, holds, breakers and hedges
	// from the engine's counters; unregistered when the engine stops.
	gauges metric.Registration
}

// newTelemetry returns the instrumentation s asks for, or nil for none.
func newTelemetry(s *settings, st *counters) (*telemetry, error) {
	if s.TracerProvider == nil && s.MeterProvider == nil && s.Propagator == nil {
		return nil, nil
	}
	t := &telemetry{prop: s.Propagator}
	if tp := s.TracerProvider; tp != nil {
		t.tracer = tp.Tracer(instrumentation)
		if t.prop == nil {
			t.prop = otel.GetTextMapPropagator()
		}
	}
	mp := s.MeterProvider
	if mp == nil {
		return t, nil
	}
	m := mp.Meter(instrumentation)
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	var err error
	t.duration, err = m.Float64Histogram("http.client.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP client requests."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	t.attempts = counter("courier.client.attempts", "{attempt}", "Attempts sent, retries and replays included.")
	t.retries = counter("courier.client.retries", "{retry}", "Retries scheduled, by reason.")
	t.refreshes = counter("courier.client.token.refreshes", "{refresh}", "Token refreshes, by outcome.")
	t.dedupHits = counter("courier.client.dedup.hits", "{request}", "Requests that joined an identical request in flight.")
	t.expiries = counter("courier.client.session.expiries", "{session}", "Sessions that expired or were terminated.")
	t.budgetRefusals = counter("courier.client.retry_budget.refusals", "{retry}", "Retries the retry budget refused.")
	queued, err := m.Int64ObservableGauge("courier.client.queue.depth", metric.WithUnit("{request}"),
		metric.WithDescription("Requests waiting in the queue for a worker."))
	errs = append(errs, err)
	inFlight, err := m.Int64ObservableGauge("courier.client.in_flight", metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts running now."))
	errs = append(errs, err)
	holds, err := m.Int64ObservableCounter("courier.client.rate_limit.holds", metric.WithUnit("{hold}"),
		metric.WithDescription("Times a host or route was held by the server's Retry-After or an exhausted quota."))
	errs = append(errs, err)
	observed := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	trips := observed("courier.client.breaker.trips", "{trip}", "Times a circuit breaker opened.")
	rejections := observed("courier.client.breaker.rejections", "{attempt}", "Attempts an open circuit breaker refused, unsent.")
	hedges := observed("courier.client.hedges", "{attempt}", "Hedged attempts sent.")
	hedgesWon := observed("courier.client.hedges.won", "{attempt}", "Hedged attempts whose answer came first.")
	open, err := m.Int64ObservableGauge("courier.client.breaker.open", metric.WithUnit("{breaker}"),
		metric.WithDescription("Circuit breakers not closed now: open or half-open."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t.gauges, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(queued, st.queued.Load())
		o.ObserveInt64(inFlight, st.inFlight.Load())
		o.ObserveInt64(holds, st.holds.Load())
		o.ObserveInt64(trips, st.breakerTrips.Load())
		o.ObserveInt64(rejections, st.breakerRejections.Load())
		o.ObserveInt64(open, st.breakersOpen.Load())
		o.ObserveInt64(hedges, st.hedgesSent.Load())
		o.ObserveInt64(hedgesWon, st.hedgesWon.Load())
		return nil
	}, queued, inFlight, holds, trips, rejections, open, hedges, hedgesWon)
	if err != nil {
		return nil, err
	}
	t.metrics = true
	return t, nil
}

// stop unregisters the gauges' callback, so the meter provider lets go of
// the engine.
func (t *telemetry) stop() {
	if t != nil && t.gauges != nil {
		t.gauges.Unregister()
	}
}

// startRequest opens f's request span, as a child of the span in f's
// context, and puts it in f's context so attempts nest under it.
func (t *telemetry) startRequest(f *Future) {
	if t == nil || t.tracer == nil {
		return
	}
	m := f.req.MethodOrGet()
	f.ctx, f.span = t.tracer.Start(f.ctx, m, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(urlAttrs(m, &f.w.own.url)...))
}

// endRequest closes f's request span with the result.
func (t *telemetry) endRequest(f *Future, resp *requests.Response, err error) {
	if t == nil || f.span == nil {
		return
	}
	status := 0
	if resp != nil {
		status = resp.Status
		if resp.Cache != requests.CacheNone {
			f.span.SetAttributes(attribute.String("courier.cache", string(resp.Cache)))
		}
	}
	endSpan(f.span, status, err)
}

// endSpan records a result on span and ends it.
func endSpan(span trace.Span, status int, err error) {
	if status > 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	if et := errorType(status, err); et != "" {
		span.SetAttributes(semconv.ErrorTypeKey.String(et))
		span.SetStatus(codes.Error, et)
	}
	span.End()
}

// attemptSpan is one attempt's telemetry; the zero value records nothing.
type attemptSpan struct {
	span  trace.Span
	start time.Time
}

// startAttempt opens the attempt's span under the request's, injects the
// trace context into hreq's headers and returns the request to send.
func (t *telemetry) startAttempt(a *attemptSpan, hreq *http.Request, c *call, attempt int) *http.Request {
	if t == nil {
		return hreq
	}
	a.start = time.Now()
	ctx := hreq.Context()
	if t.tracer != nil {
		m := c.req.MethodOrGet()
		attrs := urlAttrs(m, &c.url)
		if attempt > 1 {
			attrs = append(attrs, semconv.HTTPRequestResendCount(attempt-1))
		}
		ctx, a.span = t.tracer.Start(ctx, m, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
		hreq = hreq.WithContext(ctx)
	}
	if t.prop != nil {
		t.prop.Inject(ctx, propagation.HeaderCarrier(hreq.Header))
	}
	return hreq
}

// endAttempt records the attempt's outcome: its span, its duration and the
// attempt count.
func (t *telemetry) endAttempt(a *attemptSpan, c *call, o *outcome) {
	if t == nil || a.start.IsZero() {
		return
	}
	status := 0
	if o.resp != nil {
		status = o.resp.Status
	}
	if a.span != nil {
		endSpan(a.span, status, o.err)
	}
	if !t.metrics {
		return
	}
	ctx := context.Background()
	t.attempts.Add(ctx, 1)
	attrs := urlMetricAttrs(c.req.MethodOrGet(), &c.url)
	if status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	if et := errorType(status, o.err); et != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(et))
	}
	t.duration.Record(ctx, time.Since(a.start).Seconds(), metric.WithAttributes(attrs...))
}

// parked notes that c waits for a token refresh.
func (t *telemetry) parked(c *call, gen uint64) {
	if t == nil || t.tracer == nil {
		return
	}
	for _, f := range c.waiters {
		if span := f.span; span != nil {
			span.AddEvent(EventParked, trace.WithAttributes(AttrTokenGen.Int64(int64(gen))))
		}
	}
}

// retryScheduled notes that c will be tried again after wait.
func (t *telemetry) retryScheduled(c *call, o *outcome, wait time.Duration) {
	if t == nil {
		return
	}
	reason := AttrRetryReason.String(retryReason(o))
	if t.metrics {
		t.retries.Add(context.Background(), 1, metric.WithAttributes(reason))
	}
	if t.tracer == nil {
		return
	}
	ev := trace.WithAttributes(AttrRetryDelay.Float64(wait.Seconds()), reason, AttrAttempt.Int(int(c.attempts)+1))
	for _, f := range c.waiters {
		if span := f.span; span != nil {
			span.AddEvent(EventRetry, ev)
		}
	}
}

// budgetRefused notes a retry the retry budget refused.
func (t *telemetry) budgetRefused() {
	if t != nil && t.metrics {
		t.budgetRefusals.Add(context.Background(), 1)
	}
}

// dedupJoined notes that f joined c, on f's own span, linked to the span
// of the request that leads c.
func (t *telemetry) dedupJoined(f *Future, c *call) {
	if t == nil {
		return
	}
	if t.metrics {
		t.dedupHits.Add(context.Background(), 1)
	}
	if span := f.span; span != nil {
		span.AddEvent(EventDedupJoined)
		if lead := trace.SpanContextFromContext(c.base); lead.IsValid() {
			span.AddLink(trace.Link{SpanContext: lead})
		}
	}
}

// refreshed counts a token refresh by outcome: "success", "failure"
// (transient, the session goes on) or "refused" (the session ends).
func (t *telemetry) refreshed(outcome string) {
	if t != nil && t.metrics {
		t.refreshes.Add(context.Background(), 1, metric.WithAttributes(AttrRefreshOutcome.String(outcome)))
	}
}

// sessionExpired counts a session's end.
func (t *telemetry) sessionExpired() {
	if t != nil && t.metrics {
		t.expiries.Add(context.Background(), 1)
	}
}

// urlAttrs are a span's HTTP attributes for a request to u.
func urlAttrs(method string, u *url.URL) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, methodAttr(method), semconv.URLFull(redactURL(u)))
	return append(attrs, serverAttrs(u)...)
}

// urlMetricAttrs are a metric's HTTP attributes for a request to u: no
// URL, whose path would make every point a series of its own.
func urlMetricAttrs(method string, u *url.URL) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, methodAttr(method))
	return append(attrs, serverAttrs(u)...)
}

func serverAttrs(u *url.URL) []attribute.KeyValue {
	port, _ := strconv.Atoi(u.Port())
	if port == 0 {
		port = 80
		if u.Scheme == "https" {
			port = 443
		}
	}
	return []attribute.KeyValue{semconv.ServerAddress(u.Hostname()), semconv.ServerPort(port), semconv.URLScheme(u.Scheme)}
}

// methodAttr is http.request.method: a known method, or _OTHER, as the
// conventions ask (a method is free text and could be anything).
func methodAttr(m string) attribute.KeyValue {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodTrace, http.MethodConnect:
		return semconv.HTTPRequestMethodKey.String(m)
	}
	return semconv.HTTPRequestMethodOther
}

// redactURL is u for url.full: [redact.URL]'s URL, then, when u had
// a query, "?REDACTED" to say that one was left out, as the semantic
// conventions mark a value they take out.
func redactURL(u *url.URL) string {
	if u.RawQuery == "" && !u.ForceQuery {
		return redact.URL(u)
	}
	return redact.URL(u) + "?REDACTED"
}

// errorType is error.type for a result: the status code of an answer of
// 400 or more, else a short name for err's kind, else "".
func errorType(status int, err error) string {
	if status >= 400 {
		return strconv.Itoa(status)
	}
	if err == nil {
		return ""
	}
	var re *errors.RequestError
	switch {
	case errors.Is(err, errors.ErrSessionExpired):
		return "session_expired"
	case errors.Is(err, errors.ErrRefreshFailed):
		return "refresh_failed"
	case errors.Is(err, errors.ErrClosed):
		return "closed"
	case errors.Is(err, errors.ErrQueueFull):
		return "queue_full"
	case errors.Is(err, errors.ErrResponseTooLarge):
		return "response_too_large"
	case errors.Is(err, errors.ErrRetryBudgetExhausted):
		return "retry_budget_exhausted"
	case errors.Is(err, errors.ErrBodyNotReplayable):
		return "body_not_replayable"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &re) && re.Timeout():
		return "timeout"
	case errors.As(err, &re):
		return "transport"
	}
	var pe *errors.PanicError
	if errors.As(err, &pe) {
		return "panic"
	}
	return "_OTHER"
}

// retryReason is courier.retry.reason for a retried attempt: its status
// code, or "timeout" or "transport" when no answer came.
func retryReason(o *outcome) string {
	if o.resp != nil {
		return strconv.Itoa(o.resp.Status)
	}
	var re *errors.RequestError
	if errors.Is(o.err, context.DeadlineExceeded) || errors.As(o.err, &re) && re.Timeout() {
		return "timeout"
	}
	return "transport"
}
