package engine_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// flaky answers status with the given Retry-After on the first call and
// 200 afterwards, in process.
func flaky(status int, retryAfter func() string) (*http.Client, *atomic.Int64) {
	var calls atomic.Int64
	return inProcess(func(r *http.Request) (*http.Response, error) {
		if calls.Add(1) == 1 {
			return answer(r, status, "", "Retry-After", retryAfter()), nil
		}
		return answer(r, 200, "ok"), nil
	}), &calls
}

// The engine waits on Config.Clock: the wait it schedules after a
// Retry-After is a timer on the fake clock, and only advancing that clock
// sends the retry. In a synctest bubble, synctest.Wait returns once the
// engine has scheduled the wait (or stalled), with no real time spent.
func TestRetryAfterIsHonouredOnAFakeClock(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		header func(now time.Time) string
		want   time.Duration
	}{
		{"503 seconds", 503, func(time.Time) string { return "7" }, 7 * time.Second},
		{"429 seconds", 429, func(time.Time) string { return "3" }, 3 * time.Second},
		{"503 HTTP-date", 503, func(now time.Time) string { return now.Add(12 * time.Second).UTC().Format(http.TimeFormat) }, 12 * time.Second},
		{"429 HTTP-date", 429, func(now time.Time) string { return now.Add(4 * time.Second).UTC().Format(http.TimeFormat) }, 4 * time.Second},
		{"capped", 503, func(time.Time) string { return "86400" }, engine.DefaultMaxRetryAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clock := newFakeClock()
				client, calls := flaky(tc.status, func() string { return tc.header(clock.Now()) })
				e := newEngine(t, engine.Config{BaseURL: "http://api.test", HTTPClient: client, Clock: clock})
				f := e.Submit(context.Background(), requests.New("GET", "/x"))
				synctest.Wait()
				require.EqualValues(t, 1, calls.Load(), "the first attempt went out")
				assert.Equal(t, []time.Duration{tc.want}, clock.Pending(), "a retry should be scheduled on the clock")
				select {
				case <-f.Done():
					t.Fatal("resolved before the wait was over")
				default:
				}
				clock.Advance(tc.want)
				resp, err := f.Await(context.Background())
				require.NoError(t, err)
				assert.Equal(t, 2, resp.Attempts)
				assert.EqualValues(t, 2, calls.Load())
			})
		})
	}
}

// TestBackoffAndLimiterWaitOnConfigClock: the backoff before a retry and
// the limiter's wait are timers on Config.Clock, not on package time: each
// is pending on the fake clock, and the retry goes out only once the test
// advances it.
func TestBackoffAndLimiterWaitOnConfigClock(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  engine.Config
		want time.Duration
	}{
		{"backoff", engine.Config{Retry: engine.Retry{MaxDelay: time.Minute,
			Backoff: func(int, time.Duration, time.Duration) time.Duration { return 3 * time.Second }}}, 3 * time.Second},
		{"limiter", engine.Config{RateLimit: engine.RateLimit{PerSecond: 1, Burst: 1},
			Retry: engine.Retry{Backoff: noBackoff}}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clock := newFakeClock()
				var calls atomic.Int64
				cfg := tc.cfg
				cfg.BaseURL, cfg.Clock = "http://api.test", clock
				cfg.HTTPClient = inProcess(func(r *http.Request) (*http.Response, error) {
					if calls.Add(1) == 1 {
						return answer(r, 503, "busy"), nil
					}
					return answer(r, 200, "ok"), nil
				})
				e := newEngine(t, cfg)
				f := e.Submit(context.Background(), requests.New("GET", "/x"))
				synctest.Wait()
				require.EqualValues(t, 1, calls.Load(), "the first attempt went out")
				assert.Equal(t, []time.Duration{tc.want}, clock.Pending(), "the retry waits on the clock")
				advance(time.Hour) // time elsewhere does not move the engine's clock
				select {
				case <-f.Done():
					t.Fatal("resolved before the clock moved")
				default:
				}
				assert.EqualValues(t, 1, calls.Load())
				clock.Advance(tc.want)
				resp, err := f.Await(context.Background())
				require.NoError(t, err)
				assert.Equal(t, 2, resp.Attempts)
			})
		})
	}
}

func TestRetryRulesByMethod(t *testing.T) {
	// A server that answers status for every call and counts them.
	always := func(status int) (*httptest.Server, *atomic.Int64) {
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(status)
		}))
		t.Cleanup(srv.Close)
		return srv, &calls
	}
	resetter := func() (*httptest.Server, *atomic.Int64) {
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			conn, _, err := w.(http.Hijacker).Hijack()
			require.NoError(t, err)
			conn.(*net.TCPConn).SetLinger(0) // RST, not FIN
			conn.Close()
		}))
		t.Cleanup(srv.Close)
		return srv, &calls
	}
	for _, tc := range []struct {
		name   string
		server func() (*httptest.Server, *atomic.Int64)
		req    *requests.Request
		calls  int64
	}{
		{"POST not retried on 500", func() (*httptest.Server, *atomic.Int64) { return always(500) }, requests.New("POST", "/x"), 1},
		{"POST not retried on reset", resetter, requests.New("POST", "/x", requests.WithBytes([]byte("payload"), "text/plain")), 1},
		{"POST with Idempotency-Key retried on 500", func() (*httptest.Server, *atomic.Int64) { return always(500) }, requests.New("POST", "/x", requests.WithIdempotencyKey("k1")), 3},
		{"PUT retried on 503", func() (*httptest.Server, *atomic.Int64) { return always(503) }, requests.New("PUT", "/x"), 3},
		{"GET retried on reset", resetter, requests.New("GET", "/x"), 3},
		{"GET not retried on 404", func() (*httptest.Server, *atomic.Int64) { return always(404) }, requests.New("GET", "/x"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, calls := tc.server()
			e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: fastRetry()})
			_, err := e.Do(ctxTimeout(t, 5*time.Second), tc.req)
			require.Error(t, err)
			assert.Equal(t, tc.calls, calls.Load(), "server-side calls")
		})
	}
}

func TestPOSTRetriedOnConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	e := newEngine(t, engine.Config{BaseURL: "http://" + addr, Retry: fastRetry()})
	_, err = e.Post(ctxTimeout(t, 5*time.Second), "/x", requests.WithJSON(map[string]int{"a": 1}))
	var re *errors.RequestError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 3, re.Attempts, "a request that never reached the server is safe to retry")
	assert.EqualValues(t, 2, e.Stats().Retries)
}

func TestRateLimitPacesEveryAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		var mu sync.Mutex
		seen := map[string]int{}
		// Each request's first attempt fails with a 503, so its retry
		// goes at once (no backoff) unless the limiter paces it too.
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			mu.Lock()
			seen[r.URL.RawQuery]++
			first := seen[r.URL.RawQuery] == 1
			mu.Unlock()
			if first {
				w.WriteHeader(503)
			}
		}}, engine.Config{Workers: 4, RateLimit: engine.RateLimit{PerSecond: 2, Burst: 1},
			Retry: engine.Retry{Backoff: noBackoff}})
		getAll(t, e, repeat("/x", 4)...)
		assert.Equal(t, seconds(0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5), arr.of("a.test/x"),
			"four first attempts and four retries: a burst of one, then one every 500ms")
		assert.EqualValues(t, 4, e.Stats().Retries)
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{"1.5", 0, false},
	} {
		got, ok := engine.ParseRetryAfter(tc.in, now)
		assert.Equal(t, tc.ok, ok, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}

// TestRateLimitAppliesToRetries: a retry is an attempt like any other and
// waits for the limiter, even when the backoff says go at once.
func TestRateLimitAppliesToRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		var calls atomic.Int64
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			if calls.Add(1) == 1 {
				w.WriteHeader(503)
			}
		}}, engine.Config{RateLimit: engine.RateLimit{PerSecond: 1, Burst: 1},
			Retry: engine.Retry{Backoff: noBackoff}})
		resp, err := e.Get(context.Background(), "/x")
		require.NoError(t, err)
		assert.Equal(t, 2, resp.Attempts)
		assert.Equal(t, seconds(0, 1), arr.of("a.test/x"), "the retry waited its turn at the limiter")
	})
}

func TestDefaultHeadersAndRequestHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() }))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Headers: http.Header{"X-Client": {"courier"}, "Accept": {"application/json"}}})
	_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x", requests.WithHeader("Accept", "text/csv"), requests.WithIdempotencyKey("k"))
	require.NoError(t, err)
	h := <-got
	assert.Equal(t, "courier", h.Get("X-Client"), "default headers go with every request")
	assert.Equal(t, "text/csv", h.Get("Accept"), "a request's own header wins")
	assert.Equal(t, "k", h.Get("Idempotency-Key"))
}
