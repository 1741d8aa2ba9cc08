package engine_test

import (
	"context"
	"io"
	"net/http"
	"strings"
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

// stallServer answers each request after the delay its number asks for
// (1-based, over every request that reaches it), or when the request is
// cancelled, and counts cancellations and closed bodies.
type stallServer struct {
	delay     func(n int64, r *http.Request) time.Duration
	status    int
	calls     atomic.Int64
	cancelled atomic.Int64
	closed    atomic.Int64
}

func (s *stallServer) client() *http.Client {
	return inProcess(func(r *http.Request) (*http.Response, error) {
		n := s.calls.Add(1)
		if d := s.delay(n, r); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				s.cancelled.Add(1)
				return nil, r.Context().Err()
			}
		}
		st := s.status
		if st == 0 {
			st = 200
		}
		resp := answer(r, st, "answer "+itoa(int(n)))
		resp.Body = &closeCounter{ReadCloser: resp.Body, n: &s.closed}
		return resp, nil
	})
}

type closeCounter struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *closeCounter) Close() error { c.n.Add(1); return c.ReadCloser.Close() }

func TestHedgeFirstAnswerWinsAndTheOtherIsCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &stallServer{delay: func(n int64, _ *http.Request) time.Duration {
			if n == 1 {
				return time.Minute // the first copy stalls
			}
			return 10 * time.Millisecond
		}}
		e := virtualEngine(t, engine.Config{
			HTTPClient: srv.client(),
			Hedge:      engine.Hedge{Delay: 100 * time.Millisecond, Budget: 1},
		})
		start := time.Now()
		resp, err := e.Get(context.Background(), "/slow")
		require.NoError(t, err)
		assert.Equal(t, "answer 2", string(resp.Body), "the hedge's answer")
		assert.Equal(t, 110*time.Millisecond, time.Since(start), "hedged after the delay, not after the stall")
		assert.Equal(t, 1, resp.Attempts, "both copies are one attempt")
		synctest.Wait()
		assert.Equal(t, int64(1), srv.cancelled.Load(), "the stalled copy is cancelled")
		assert.Equal(t, int64(1), srv.closed.Load(), "the winner's body is closed")
		st := e.Stats()
		assert.Equal(t, int64(1), st.HedgesSent)
		assert.Equal(t, int64(1), st.HedgesWon)
	})
}

func TestHedgeLoserAnswerIsDrainedAndClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Both copies answer at the same instant: one wins, the other's
		// body is closed all the same.
		srv := &stallServer{delay: func(n int64, _ *http.Request) time.Duration {
			if n == 1 {
				return 150 * time.Millisecond
			}
			return 50 * time.Millisecond
		}}
		e := virtualEngine(t, engine.Config{HTTPClient: srv.client(), Hedge: engine.Hedge{Delay: 100 * time.Millisecond, Budget: 1}})
		_, err := e.Get(context.Background(), "/x")
		require.NoError(t, err)
		synctest.Wait()
		assert.Equal(t, int64(2), srv.calls.Load())
		assert.Equal(t, srv.calls.Load(), srv.closed.Load()+srv.cancelled.Load(), "every copy ended: closed or cancelled")
	})
}

func TestHedgeNotSentWhenTheFirstAnswersInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &stallServer{delay: func(int64, *http.Request) time.Duration { return 50 * time.Millisecond }}
		e := virtualEngine(t, engine.Config{HTTPClient: srv.client(), Hedge: engine.Hedge{Delay: 100 * time.Millisecond, Budget: 1}})
		for range 10 {
			_, err := e.Get(context.Background(), "/x")
			require.NoError(t, err)
		}
		assert.Equal(t, int64(10), srv.calls.Load())
		assert.Zero(t, e.Stats().HedgesSent)
	})
}

func TestHedgeOnlyIdempotentRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &stallServer{delay: func(int64, *http.Request) time.Duration { return time.Second }}
		e := virtualEngine(t, engine.Config{HTTPClient: srv.client(), Hedge: engine.Hedge{Delay: 100 * time.Millisecond, Budget: 1}})
		_, err := e.Post(context.Background(), "/x", requests.WithJSON(map[string]int{"a": 1}))
		require.NoError(t, err)
		_, err = e.Do(context.Background(), requests.New("DELETE", "/x"))
		require.NoError(t, err)
		assert.Equal(t, int64(2), srv.calls.Load())
		assert.Zero(t, e.Stats().HedgesSent)
	})
}

func TestHedgeBudgetBoundsExtraRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Every first copy is slow: without a budget each would be hedged.
		srv := &stallServer{delay: func(int64, *http.Request) time.Duration { return 200 * time.Millisecond }}
		e := virtualEngine(t, engine.Config{HTTPClient: srv.client(), Workers: 4, Hedge: engine.Hedge{Delay: 100 * time.Millisecond}})
		var futures []*engine.Future
		for i := range 400 {
			futures = append(futures, e.Submit(context.Background(), requests.New("GET", "/x/"+itoa(i))))
		}
		requireAllOK(t, context.Background(), futures)
		sent := e.Stats().HedgesSent
		// 5% of the attempts, plus the ten the budget starts with.
		assert.LessOrEqual(t, sent, int64(400*engine.DefaultHedgeBudget)+10, "at most 5%% extra")
		assert.GreaterOrEqual(t, sent, int64(400*engine.DefaultHedgeBudget)+10-1, "the budget is used")
		assert.Equal(t, 400+sent, srv.calls.Load())
	})
}

func TestHedgeNeverToAHeldHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &stallServer{delay: func(n int64, r *http.Request) time.Duration {
			if r.URL.Path == "/slow" {
				return time.Second
			}
			return 0
		}}
		client := srv.client()
		held := inProcess(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path == "/throttled" {
				srv.calls.Add(1)
				return answer(r, 429, "", "Retry-After", "30"), nil
			}
			return client.Transport.RoundTrip(r)
		})
		e := virtualEngine(t, engine.Config{HTTPClient: held, Retry: engine.Retry{MaxAttempts: 1},
			Hedge: engine.Hedge{Delay: 100 * time.Millisecond, Budget: 1}})
		slow := e.Submit(context.Background(), requests.New("GET", "/slow"))
		synctest.Wait()
		_, err := e.Get(context.Background(), "/throttled") // holds the host for 30 s
		require.Error(t, err)
		_, err = slow.Await(context.Background())
		require.NoError(t, err)
		assert.Zero(t, e.Stats().HedgesSent)
		assert.Equal(t, int64(2), srv.calls.Load())
	})
}

func TestHedgeNeverToABreakerThatIsNotClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		fail.Store(true)
		srv := &stallServer{delay: func(n int64, r *http.Request) time.Duration {
			if fail.Load() {
				return 0
			}
			return time.Second
		}}
		inner := srv.client()
		flaky := inProcess(func(r *http.Request) (*http.Response, error) {
			if fail.Load() {
				srv.calls.Add(1)
				return answer(r, 503, ""), nil
			}
			return inner.Transport.RoundTrip(r)
		})
		e := virtualEngine(t, engine.Config{HTTPClient: flaky, Retry: engine.Retry{MaxAttempts: 1},
			Breaker: engine.Breaker{ConsecutiveFailures: 1, Cooldown: time.Second, Probes: 1},
			Hedge:   engine.Hedge{Delay: 100 * time.Millisecond, Budget: 1}})
		_, err := e.Get(context.Background(), "/x")
		require.Error(t, err)
		fail.Store(false)
		advance(time.Second)
		_, err = e.Get(context.Background(), "/x") // the half-open breaker's probe: slow, not hedged
		require.NoError(t, err)
		assert.Zero(t, e.Stats().HedgesSent)
		assert.Equal(t, int64(2), srv.calls.Load())
	})
}

func TestHedgeAtAPercentileOfRecentLatencies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 1 request in 50 stalls for a second; the others take 10 ms.
		srv := &stallServer{delay: func(n int64, r *http.Request) time.Duration {
			if strings.HasSuffix(r.URL.Path, "/stall") && r.Header.Get("X-Copy") == "" {
				return time.Second
			}
			return 10 * time.Millisecond
		}}
		mark := func(next http.RoundTripper) http.RoundTripper {
			var mu sync.Mutex
			seen := map[string]bool{}
			return engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
				mu.Lock()
				again := seen[r.URL.Path]
				seen[r.URL.Path] = true
				mu.Unlock()
				if again { // the second copy of an attempt
					r.Header.Set("X-Copy", "hedge")
				}
				return next.RoundTrip(r)
			})
		}
		e := virtualEngine(t, engine.Config{HTTPClient: srv.client(), Middleware: []engine.Middleware{mark},
			Hedge: engine.Hedge{Percentile: 95, Budget: 1}})
		ctx := context.Background()
		start := time.Now()
		_, err := e.Get(ctx, "/before/stall")
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start), "no latency known yet, no Delay: not hedged")
		for i := range 30 {
			_, err := e.Get(ctx, "/x/"+itoa(i))
			require.NoError(t, err)
		}
		start = time.Now()
		_, err = e.Get(ctx, "/after/stall")
		require.NoError(t, err)
		assert.Equal(t, 20*time.Millisecond, time.Since(start), "hedged after the p95 (10 ms), answered 10 ms later")
		assert.Equal(t, int64(1), e.Stats().HedgesWon)
	})
}

func TestHedgeConfigErrors(t *testing.T) {
	_, err := engine.New(engine.Config{BaseURL: "http://api.test", Hedge: engine.Hedge{
		Delay: -1, Percentile: 100, Budget: 2,
		Routes: []engine.HedgeRoute{{Host: "", Prefix: "/x"}},
	}})
	require.Error(t, err)
	for _, want := range []string{"Hedge.Delay is negative", "Hedge.Percentile 100", "Hedge.Budget 2", `Hedge.Routes[0].Host: "" is not a host`} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotErrorIs(t, err, errors.ErrClosed)
}

func TestHedgeCopiesTheRequestBeforeMiddlewareChangesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Middleware may change the request it is given; the first copy's
		// middleware runs while the hedge is made.
		stamp := func(next http.RoundTripper) http.RoundTripper {
			return engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
				for i := range 50 {
					r.Header.Set("X-Stamp", itoa(i))
					time.Sleep(5 * time.Millisecond)
				}
				return next.RoundTrip(r)
			})
		}
		srv := &stallServer{delay: func(int64, *http.Request) time.Duration { return 0 }}
		e := virtualEngine(t, engine.Config{HTTPClient: srv.client(), Middleware: []engine.Middleware{stamp},
			Hedge: engine.Hedge{Delay: 100 * time.Millisecond}})
		_, err := e.Get(context.Background(), "/x")
		require.NoError(t, err)
		assert.Equal(t, int64(1), e.Stats().HedgesSent)
	})
}

func TestHedgePanicInMiddlewareFailsOnlyItsRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := func(next http.RoundTripper) http.RoundTripper {
			return engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
				if r.URL.Path == "/boom" {
					panic("middleware bug")
				}
				return next.RoundTrip(r)
			})
		}
		srv := &stallServer{delay: func(int64, *http.Request) time.Duration { return 0 }}
		e := virtualEngine(t, engine.Config{HTTPClient: srv.client(), Middleware: []engine.Middleware{boom},
			Hedge: engine.Hedge{Delay: 100 * time.Millisecond}})
		_, err := e.Get(context.Background(), "/boom")
		var pe *errors.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "middleware bug", pe.Value)
		_, err = e.Get(context.Background(), "/fine")
		require.NoError(t, err, "the engine keeps running")
	})
}

func TestHedgeWaitsForTheRateLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One attempt a second: the hedge's turn would come at 1 s, after
		// the first copy has answered at 500 ms, so it is never sent.
		srv := &stallServer{delay: func(int64, *http.Request) time.Duration { return 500 * time.Millisecond }}
		e := virtualEngine(t, engine.Config{HTTPClient: srv.client(),
			RateLimit: engine.RateLimit{PerHost: engine.Rate{PerSecond: 1, Burst: 1}},
			Hedge:     engine.Hedge{Delay: 100 * time.Millisecond}})
		start := time.Now()
		_, err := e.Get(context.Background(), "/x")
		require.NoError(t, err)
		assert.Equal(t, 500*time.Millisecond, time.Since(start))
		assert.Zero(t, e.Stats().HedgesSent)
		assert.Equal(t, int64(1), srv.calls.Load())

		// A stalled attempt is hedged when the bucket lets the hedge go:
		// a second after the first copy took the last token.
		advance(2 * time.Second)
		srv.delay = func(n int64, _ *http.Request) time.Duration {
			if n == 2 {
				return time.Minute
			}
			return 0
		}
		start = time.Now()
		_, err = e.Get(context.Background(), "/y")
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, int64(1), e.Stats().HedgesWon)
	})
}
