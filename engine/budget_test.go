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

// noBackoff retries at once, so budget tests on a frozen clock never wait.
func noBackoff(int, time.Duration, time.Duration) time.Duration { return 0 }

// switchable answers 503 while failing is set, 200 otherwise, and counts
// the calls.
func switchable(t *testing.T) (srv *httptest.Server, failing *atomic.Bool, calls *atomic.Int64) {
	failing, calls = new(atomic.Bool), new(atomic.Int64)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if failing.Load() {
			w.WriteHeader(503)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, failing, calls
}

func TestRetryBudgetBurstOfOnceFlakyRequestsAllSucceed(t *testing.T) {
	// The burst at the start of a batch that the old ratio budget failed:
	// every request is answered 503 + Retry-After: 1 once, before any has
	// succeeded. In a synctest bubble, in process: the first attempts are
	// all answered together, once all n have arrived, and the second of
	// wait takes no real time.
	synctest.Test(t, func(t *testing.T) {
		const n = 100
		var mu sync.Mutex
		seen := map[string]bool{}
		var calls atomic.Int64
		allIn := make(chan struct{}) // closed when the nth first attempt arrives
		e := newEngine(t, engine.Config{BaseURL: "http://api.test", Workers: n, QueueSize: 2 * n,
			HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
				calls.Add(1)
				id := r.URL.Query().Get("id")
				mu.Lock()
				first := !seen[id]
				seen[id] = true
				if first && len(seen) == n {
					close(allIn)
				}
				mu.Unlock()
				if first {
					<-allIn
					return answer(r, 503, "", "Retry-After", "1"), nil
				}
				return answer(r, 200, "ok"), nil
			})})
		ctx := context.Background()
		futures := submitItems(ctx, e, n)
		requireAllOK(t, ctx, futures)
		assert.EqualValues(t, 2*n, calls.Load(), "one retry each")
		assert.EqualValues(t, n, e.Stats().Retries)
	})
}

func TestRetryBudgetDeadServer(t *testing.T) {
	srv, failing, calls := switchable(t)
	failing.Store(true)
	clock := newFakeClock() // frozen: nothing but successes refills the budget
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Clock: clock, Workers: 4,
		Retry: engine.Retry{Backoff: noBackoff}})
	ctx := ctxTimeout(t, 20*time.Second)
	get := func(i int) error {
		_, err := e.Get(ctx, "/x", requests.WithQuery("i", itoa(i)))
		return err
	}

	const n = 300
	exhausted := 0
	for i := range n {
		err := get(i)
		require.Error(t, err)
		if errors.Is(err, errors.ErrRetryBudgetExhausted) {
			var he *errors.HTTPError
			require.ErrorAs(t, err, &he, "the last answer is kept")
			assert.Equal(t, 503, he.Status)
			exhausted++
		}
	}
	// Without a budget: 3 calls each. With it: n + Capacity/RetryCost.
	t.Logf("dead server: %d calls for %d requests (no budget: %d); %d exhausted", calls.Load(), n, 3*n, exhausted)
	assert.LessOrEqual(t, calls.Load(), int64(n+engine.DefaultBudgetCapacity/engine.DefaultRetryCost))
	assert.Equal(t, n-engine.DefaultBudgetCapacity/(2*engine.DefaultRetryCost), exhausted,
		"the first 50 requests spend the bucket on two retries each; the rest get none")

	failing.Store(false)
	for i := range 10 {
		require.NoError(t, get(1000+i)) // each first-attempt success refunds 1
	}
	failing.Store(true)
	before := calls.Load()
	err := get(5000)
	require.NotErrorIs(t, err, errors.ErrRetryBudgetExhausted, "10 tokens pay two retries")
	assert.EqualValues(t, 3, calls.Load()-before, "retried twice again once successes refilled the bucket")
	before = calls.Load()
	require.ErrorIs(t, get(5001), errors.ErrRetryBudgetExhausted, "and no more")
	assert.EqualValues(t, 1, calls.Load()-before)
}

func TestRetryBudgetRefunds(t *testing.T) {
	t.Run("a success after retries refunds what they cost", func(t *testing.T) {
		// Each request fails once: with a bucket of one retry, only the
		// refund of that retry's cost lets the next request retry too.
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1)%2 == 1 {
				w.WriteHeader(503)
			}
		}))
		defer srv.Close()
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Clock: newFakeClock(), Workers: 1,
			Retry: engine.Retry{Backoff: noBackoff, Budget: engine.Budget{Capacity: 5, RetryCost: 5}}})
		ctx := ctxTimeout(t, 10*time.Second)
		for i := range 20 {
			resp, err := e.Get(ctx, "/x", requests.WithQuery("i", itoa(i)))
			require.NoError(t, err, "request %d", i)
			assert.Equal(t, 2, resp.Attempts)
		}
	})
	t.Run("a first-attempt success refunds Refund", func(t *testing.T) {
		srv, failing, calls := switchable(t)
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Clock: newFakeClock(), Workers: 1,
			Retry: engine.Retry{Backoff: noBackoff, Budget: engine.Budget{Capacity: 10, RetryCost: 5, Refund: 2}}})
		ctx := ctxTimeout(t, 10*time.Second)
		failing.Store(true)
		_, err := e.Get(ctx, "/a")
		require.NotErrorIs(t, err, errors.ErrRetryBudgetExhausted, "the full bucket pays two retries")
		_, err = e.Get(ctx, "/b")
		require.ErrorIs(t, err, errors.ErrRetryBudgetExhausted, "the bucket is empty")
		failing.Store(false)
		for i := range 3 {
			_, err := e.Get(ctx, "/ok", requests.WithQuery("i", itoa(i)))
			require.NoError(t, err)
		}
		failing.Store(true)
		before := calls.Load()
		_, err = e.Get(ctx, "/c")
		require.ErrorIs(t, err, errors.ErrRetryBudgetExhausted)
		assert.EqualValues(t, 2, calls.Load()-before, "three successes refunded 6: one retry and no second")
	})
	t.Run("disabled", func(t *testing.T) {
		srv, failing, calls := switchable(t)
		failing.Store(true)
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Clock: newFakeClock(),
			Retry: engine.Retry{Backoff: noBackoff, Budget: engine.Budget{Capacity: 1, Disabled: true}}})
		ctx := ctxTimeout(t, 10*time.Second)
		for i := range 10 {
			_, err := e.Get(ctx, "/x", requests.WithQuery("i", itoa(i)))
			require.NotErrorIs(t, err, errors.ErrRetryBudgetExhausted)
		}
		assert.EqualValues(t, 30, calls.Load())
	})
}

func TestRetryBudgetConnectionFailuresCostTimeoutCost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now: every attempt is refused
	var attempts atomic.Int64
	count := func(next http.RoundTripper) http.RoundTripper {
		return engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
			attempts.Add(1)
			return next.RoundTrip(r)
		})
	}
	e := newEngine(t, engine.Config{BaseURL: "http://" + addr, Clock: newFakeClock(), Workers: 2,
		Middleware: []engine.Middleware{count},
		Retry:      engine.Retry{Backoff: noBackoff, Budget: engine.Budget{Capacity: 100}}})
	ctx := ctxTimeout(t, 10*time.Second)
	const n = 20
	exhausted := 0
	for i := range n {
		_, err := e.Get(ctx, "/x", requests.WithQuery("i", itoa(i)))
		var re *errors.RequestError
		require.ErrorAs(t, err, &re, "the last transport error is kept")
		if errors.Is(err, errors.ErrRetryBudgetExhausted) {
			exhausted++
		}
	}
	assert.EqualValues(t, n+100/engine.DefaultTimeoutCost, attempts.Load(), "each retry after a refused connection costs 10")
	assert.Equal(t, n-5, exhausted)
}

func TestRetryBudgetConfigErrors(t *testing.T) {
	_, err := engine.New(engine.Config{BaseURL: "http://x", Retry: engine.Retry{Budget: engine.Budget{Capacity: -1, TimeoutCost: -2}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Retry.Budget.Capacity is negative (-1)")
	assert.Contains(t, err.Error(), "Retry.Budget.TimeoutCost is negative (-2)")
}
