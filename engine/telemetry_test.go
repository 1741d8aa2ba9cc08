package engine_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-go/courier/engine"
	courierrors "github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/oteltest"
	"github.com/courier-go/courier/requests"
)

// otelRig is an engine config's tracer and meter providers, recording in
// memory.
type otelRig struct {
	spans *oteltest.TracerProvider // the same provider as tp, read for its spans
	tp    *oteltest.TracerProvider
	mp    *oteltest.MeterProvider
}

func newOtelRig(*testing.T) *otelRig {
	tp := oteltest.NewTracerProvider()
	return &otelRig{spans: tp, tp: tp, mp: oteltest.NewMeterProvider()}
}

func (r *otelRig) apply(cfg engine.Config) engine.Config {
	cfg.TracerProvider = r.tp
	cfg.MeterProvider = r.mp
	cfg.Propagator = propagation.TraceContext{}
	return cfg
}

// requestSpans returns the ended request spans (those whose parent is not
// an engine span), and the attempt spans by parent span ID.
func (r *otelRig) requestSpans() (reqs []*oteltest.Span, attempts map[trace.SpanID][]*oteltest.Span) {
	ended := r.spans.Ended()
	ids := map[trace.SpanID]bool{}
	for _, s := range ended {
		ids[s.SpanContext().SpanID()] = true
	}
	attempts = map[trace.SpanID][]*oteltest.Span{}
	for _, s := range ended {
		if p := s.Parent().SpanID(); ids[p] {
			attempts[p] = append(attempts[p], s)
		} else {
			reqs = append(reqs, s)
		}
	}
	return reqs, attempts
}

// metrics collects the current metrics by name.
func (r *otelRig) metrics(*testing.T) map[string]oteltest.Metric { return r.mp.Collect() }

// gauge returns the value of the int64 gauge name, which has one point.
func gauge(t *testing.T, m map[string]oteltest.Metric, name string) int64 {
	t.Helper()
	g, ok := m[name]
	require.True(t, ok && g.Kind == oteltest.Gauge, name)
	require.Len(t, g.Points, 1)
	return g.Points[0].Value
}

// sum returns a counter's total over the points whose attributes include
// want.
func sum(t *testing.T, data oteltest.Metric, want ...attribute.KeyValue) int64 {
	t.Helper()
	if data.Kind != oteltest.Counter {
		return 0
	}
	var n int64
	for _, p := range data.Points {
		if hasAll(p.Attributes, want) {
			n += p.Value
		}
	}
	return n
}

func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

func attr(s *oteltest.Span, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func eventNames(s *oteltest.Span) []string {
	var out []string
	for _, e := range s.Events() {
		out = append(out, e.Name)
	}
	return out
}

// noSecrets fails if any attribute of any span or event holds one of the
// secrets.
func noSecrets(t *testing.T, spans []*oteltest.Span, secrets ...string) {
	t.Helper()
	for _, s := range spans {
		kvs := append([]attribute.KeyValue(nil), s.Attributes()...)
		for _, e := range s.Events() {
			kvs = append(kvs, e.Attributes...)
		}
		for _, kv := range kvs {
			for _, secret := range secrets {
				assert.NotContains(t, kv.Value.String(), secret, "span %q attribute %s", s.Name(), kv.Key)
			}
		}
	}
}

func TestTelemetryOfARetriedRequest(t *testing.T) {
	rig := newOtelRig(t)
	var mu sync.Mutex
	var traceparents []string
	rs := newRecordingServer(t, func(n int, r *http.Request) int {
		mu.Lock()
		traceparents = append(traceparents, r.Header.Get("Traceparent"))
		mu.Unlock()
		if n == 1 {
			return http.StatusBadGateway // no Retry-After: the backoff decides
		}
		return 200
	})
	// A fixed backoff, so the retry event's delay is known.
	retry := fastRetry()
	retry.MaxDelay = 10 * time.Millisecond
	retry.Backoff = func(int, time.Duration, time.Duration) time.Duration { return 3 * time.Millisecond }
	e := newEngine(t, rig.apply(engine.Config{BaseURL: rs.URL, Retry: retry, Auth: engine.Auth{AccessToken: "tok-secret"}}))

	resp, err := e.Get(context.Background(), "/items/7", requests.WithQuery("api_key", "query-secret"))
	require.NoError(t, err)
	require.Equal(t, 200, resp.Status)

	reqs, attempts := rig.requestSpans()
	require.Len(t, reqs, 1)
	span := reqs[0]
	assert.Equal(t, "GET", span.Name())
	assert.Equal(t, trace.SpanKindClient, span.SpanKind())
	full, _ := attr(span, "url.full")
	assert.Equal(t, rs.URL+"/items/7?REDACTED", full.AsString())
	status, _ := attr(span, "http.response.status_code")
	assert.Equal(t, int64(200), status.AsInt64())
	method, _ := attr(span, "http.request.method")
	assert.Equal(t, "GET", method.AsString())
	assert.Equal(t, []string{engine.EventRetry}, eventNames(span))
	delay, ok := attrOf(span.Events()[0].Attributes, engine.AttrRetryDelay)
	assert.True(t, ok, "the retry event carries its delay")
	assert.InDelta(t, 0.003, delay.AsFloat64(), 1e-9, "the backoff's 3ms, in seconds")

	tries := attempts[span.SpanContext().SpanID()]
	require.Len(t, tries, 2, "one child span per attempt")
	byResend := map[int64]*oteltest.Span{}
	for _, a := range tries {
		assert.Equal(t, trace.SpanKindClient, a.SpanKind())
		assert.Equal(t, span.SpanContext().TraceID(), a.SpanContext().TraceID())
		n, _ := attr(a, "http.request.resend_count")
		byResend[n.AsInt64()] = a
	}
	first, second := byResend[0], byResend[1]
	require.NotNil(t, first)
	require.NotNil(t, second, "the retry carries http.request.resend_count 1")
	st, _ := attr(first, "http.response.status_code")
	assert.Equal(t, int64(502), st.AsInt64())
	et, _ := attr(first, "error.type")
	assert.Equal(t, "502", et.AsString())
	assert.Equal(t, codes.Error, first.Status().Code)

	// Each attempt carried its own span's context.
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, traceparents, 2)
	assert.Contains(t, traceparents[0], first.SpanContext().SpanID().String())
	assert.Contains(t, traceparents[1], second.SpanContext().SpanID().String())
	noSecrets(t, rig.spans.Ended(), "tok-secret", "query-secret")

	m := rig.metrics(t)
	assert.Equal(t, int64(2), sum(t, m["courier.client.attempts"]))
	assert.Equal(t, int64(1), sum(t, m["courier.client.retries"], engine.AttrRetryReason.String("502")))
	h, ok := m["http.client.request.duration"]
	require.True(t, ok && h.Kind == oteltest.Histogram, "the duration histogram")
	counts := map[int64]uint64{}
	for _, p := range h.Points {
		s, _ := p.Attributes.Value("http.response.status_code")
		counts[s.AsInt64()] += p.Count
		addr, _ := p.Attributes.Value("server.address")
		assert.Equal(t, "127.0.0.1", addr.AsString())
		assert.Equal(t, []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}, p.Bounds)
		for _, kv := range p.Attributes.ToSlice() {
			assert.NotContains(t, kv.Value.String(), "secret")
		}
	}
	assert.Equal(t, map[int64]uint64{502: 1, 200: 1}, counts)
}

func attrOf(kvs []attribute.KeyValue, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func TestTelemetryOfARequestParkedForRefresh(t *testing.T) {
	rig := newOtelRig(t)
	s := newAuthServer(t, nil)
	e := newEngine(t, rig.apply(authConfig(s)))
	resp, err := e.Get(context.Background(), "/items/1")
	require.NoError(t, err)
	require.Equal(t, 200, resp.Status)

	reqs, attempts := rig.requestSpans()
	require.Len(t, reqs, 1)
	span := reqs[0]
	assert.Equal(t, []string{engine.EventParked}, eventNames(span))
	tries := attempts[span.SpanContext().SpanID()]
	require.Len(t, tries, 2, "the rejected attempt and the replay")
	noSecrets(t, rig.spans.Ended(), "stale", "access-2", "refresh-1", "refresh-2")

	m := rig.metrics(t)
	assert.Equal(t, int64(1), sum(t, m["courier.client.token.refreshes"], engine.AttrRefreshOutcome.String("success")))
	assert.Equal(t, int64(2), sum(t, m["courier.client.attempts"]))
	assert.Zero(t, sum(t, m["courier.client.retries"]), "a replay is not a retry")
}

func TestTelemetryOfADedupJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rig := newOtelRig(t)
		g := newGatedAPI()
		e := virtualEngine(t, rig.apply(g.config()))
		ctx := context.Background()
		lead := e.Submit(ctx, requests.New("GET", "/items"))
		synctest.Wait()
		require.EqualValues(t, 1, g.calls.Load(), "the upstream call")
		follower := e.Submit(ctx, requests.New("GET", "/items"))
		synctest.Wait()
		require.EqualValues(t, 1, e.Stats().DedupHits, "the join")

		m := rig.metrics(t)
		assert.Equal(t, int64(1), gauge(t, m, "courier.client.in_flight"))
		assert.Equal(t, int64(0), gauge(t, m, "courier.client.queue.depth"))

		close(g.release)
		_, err := lead.Await(ctx)
		require.NoError(t, err)
		_, err = follower.Await(ctx)
		require.NoError(t, err)

		reqs, attempts := rig.requestSpans()
		require.Len(t, reqs, 2)
		var leader, joined *oteltest.Span
		for _, s := range reqs {
			if len(s.Events()) > 0 {
				joined = s
			} else {
				leader = s
			}
		}
		require.NotNil(t, joined, "the follower's own span has the event")
		require.NotNil(t, leader)
		assert.Equal(t, []string{engine.EventDedupJoined}, eventNames(joined))
		assert.Len(t, attempts[leader.SpanContext().SpanID()], 1, "one upstream call")
		assert.Empty(t, attempts[joined.SpanContext().SpanID()])
		require.Len(t, joined.Links(), 1)
		assert.Equal(t, leader.SpanContext().SpanID(), joined.Links()[0].SpanContext.SpanID(), "linked to the leader")
		assert.Equal(t, int64(1), sum(t, rig.metrics(t)["courier.client.dedup.hits"]))
	})
}

func TestTelemetryRequestSpansNestUnderTheCallersSpan(t *testing.T) {
	rig := newOtelRig(t)
	rs := newRecordingServer(t, func(int, *http.Request) int { return 200 })
	e := newEngine(t, rig.apply(engine.Config{BaseURL: rs.URL}))
	ctx, parent := rig.tp.Tracer("test").Start(context.Background(), "caller")
	_, err := e.Get(ctx, "/x")
	require.NoError(t, err)
	// Through the RoundTripper too.
	req, _ := http.NewRequestWithContext(ctx, "GET", rs.URL+"/y", nil)
	resp, err := e.HTTPClient().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	parent.End()

	var children int
	for _, s := range rig.spans.Ended() {
		if s.Parent().SpanID() == parent.SpanContext().SpanID() {
			children++
			assert.Equal(t, "GET", s.Name())
		}
	}
	assert.Equal(t, 2, children)
}

func TestTelemetryCountsSessionExpiriesAndBudgetRefusals(t *testing.T) {
	rig := newOtelRig(t)
	rs := newRecordingServer(t, func(int, *http.Request) int { return http.StatusServiceUnavailable })
	e := newEngine(t, rig.apply(engine.Config{BaseURL: rs.URL, Retry: engine.Retry{
		MaxAttempts: 5, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond,
		Budget: engine.Budget{Capacity: 5, RetryCost: 5}}}))
	_, err := e.Get(context.Background(), "/down")
	require.Error(t, err)
	e.TerminateSession()

	m := rig.metrics(t)
	assert.Equal(t, int64(1), sum(t, m["courier.client.session.expiries"]))
	assert.Equal(t, int64(1), sum(t, m["courier.client.retry_budget.refusals"]))
	assert.Equal(t, int64(1), sum(t, m["courier.client.retries"], engine.AttrRetryReason.String("503")))
}

func TestTelemetryUsesTheGlobalPropagatorUnlessConfigured(t *testing.T) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
	var mu sync.Mutex
	var seen []string
	rs := newRecordingServer(t, func(_ int, r *http.Request) int {
		mu.Lock()
		seen = append(seen, r.Header.Get("Traceparent"))
		mu.Unlock()
		return 200
	})
	rig := newOtelRig(t)
	e := newEngine(t, engine.Config{BaseURL: rs.URL, TracerProvider: rig.tp})
	_, err := e.Get(context.Background(), "/x")
	require.NoError(t, err)
	_, attempts := rig.requestSpans()
	require.Len(t, attempts, 1)
	var attempt *oteltest.Span
	for _, a := range attempts {
		attempt = a[0]
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 1)
	assert.Equal(t, "00-"+attempt.SpanContext().TraceID().String()+"-"+attempt.SpanContext().SpanID().String()+"-01", seen[0])
}

func TestTelemetryIsOffByDefault(t *testing.T) {
	var mu sync.Mutex
	var headers []string
	rs := newRecordingServer(t, func(_ int, r *http.Request) int {
		mu.Lock()
		for k := range r.Header {
			headers = append(headers, strings.ToLower(k))
		}
		mu.Unlock()
		return 200
	})
	rig := newOtelRig(t) // a caller with a span, but an engine without telemetry
	ctx, span := rig.tp.Tracer("test").Start(context.Background(), "caller")
	defer span.End()
	e := newEngine(t, engine.Config{BaseURL: rs.URL})
	_, err := e.Get(ctx, "/x")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	assert.NotContains(t, headers, "traceparent")
	assert.Empty(t, rig.spans.Ended())
}

func TestTelemetryGaugesShowTheQueueAndTheAttemptsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rig := newOtelRig(t)
		g := newGatedAPI()
		cfg := g.config()
		cfg.Workers = 2
		e := virtualEngine(t, rig.apply(cfg))
		ctx := context.Background()
		var futures []*engine.Future
		for i := range 5 {
			futures = append(futures, e.Submit(ctx, requests.New("GET", "/items/"+itoa(i))))
		}
		synctest.Wait()
		require.EqualValues(t, 2, g.calls.Load(), "two running")
		require.EqualValues(t, 3, e.Stats().Queued, "three queued")
		m := rig.metrics(t)
		assert.Equal(t, int64(2), gauge(t, m, "courier.client.in_flight"))
		assert.Equal(t, int64(3), gauge(t, m, "courier.client.queue.depth"))
		close(g.release)
		requireAllOK(t, ctx, futures)
	})
}

// A TrySubmit the engine refused used to leave its request span open, so
// it never reached the exporter.
func TestTelemetryEndsTheSpanOfARefusedTrySubmit(t *testing.T) {
	rig := newOtelRig(t)
	rs := newRecordingServer(t, func(int, *http.Request) int { return http.StatusOK })
	e := newEngine(t, rig.apply(engine.Config{BaseURL: rs.URL}))
	e.TerminateSession()
	f, err := e.TrySubmit(context.Background(), requests.New("GET", "/x"))
	require.Nil(t, f)
	require.ErrorIs(t, err, courierrors.ErrSessionExpired)

	reqs, _ := rig.requestSpans()
	require.Len(t, reqs, 1, "the refused request's span ended")
	assert.Equal(t, codes.Error, reqs[0].Status().Code)
}
