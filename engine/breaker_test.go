package engine_test

import (
	"context"
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

// hostServer is an in-process API whose answer per host and path a test
// sets, counting what reaches it.
type hostServer struct {
	mu     sync.Mutex
	status map[string]int // by host+path, else by host; 200 when unset
	calls  map[string]int // by host+path
}

func newHostServer() *hostServer {
	return &hostServer{status: map[string]int{}, calls: map[string]int{}}
}

func (s *hostServer) set(key string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[key] = status
}

func (s *hostServer) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.calls {
		if strings.HasPrefix(k, key) {
			n += v
		}
	}
	return n
}

func (s *hostServer) client() *http.Client {
	return inProcess(func(r *http.Request) (*http.Response, error) {
		s.mu.Lock()
		key := r.URL.Host + r.URL.Path
		s.calls[key]++
		st, ok := s.status[key]
		if !ok {
			st, ok = s.status[r.URL.Host]
		}
		s.mu.Unlock()
		if !ok {
			st = 200
		}
		if st == -1 {
			return nil, errors.New("connection refused")
		}
		return answer(r, st, `{}`), nil
	})
}

// changes records what OnBreakerChange is told.
type changes struct {
	mu  sync.Mutex
	got []engine.BreakerChange
}

func (c *changes) hook(ch engine.BreakerChange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, ch)
}

func (c *changes) states() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, ch := range c.got {
		out = append(out, ch.Key.String()+":"+ch.From.String()+">"+ch.To.String())
	}
	return out
}

func fetchErr(ctx context.Context, e *engine.Engine, path string) error {
	_, err := e.Get(ctx, path)
	return err
}

func TestBreakerOpensAfterConsecutiveFailuresAndFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newHostServer()
		srv.set("api.test", 503)
		var ch changes
		e := virtualEngine(t, engine.Config{
			HTTPClient:      srv.client(),
			Retry:           engine.Retry{MaxAttempts: 1},
			Breaker:         engine.Breaker{ConsecutiveFailures: 3, Cooldown: 10 * time.Second},
			OnBreakerChange: ch.hook,
		})
		ctx := context.Background()
		for i := range 3 {
			err := fetchErr(ctx, e, "/x")
			var he *errors.HTTPError
			ok := errors.As(err, &he)
			require.True(t, ok, "request %d: %v", i, err)
			assert.Equal(t, 503, he.Status)
		}
		opened := time.Now()
		err := fetchErr(ctx, e, "/x")
		require.ErrorIs(t, err, errors.ErrCircuitOpen)
		var coe *errors.CircuitOpenError
		ok := errors.As(err, &coe)
		require.True(t, ok, "%v", err)
		assert.Equal(t, "api.test", coe.Host)
		assert.Equal(t, opened.Add(10*time.Second), coe.Until, "it says when it half-opens")
		var he *errors.HTTPError
		require.ErrorAs(t, err, &he, "it wraps the last failure")
		assert.Equal(t, 503, he.Status)
		assert.Nil(t, he.Body, "another request's body is not handed over")
		assert.Contains(t, err.Error(), "circuit open for api.test until")
		assert.Equal(t, 3, srv.count("api.test"), "a request to an open breaker is not sent")

		// Other hosts are unaffected.
		require.NoError(t, fetchErr(ctx, e, "http://other.test/y"))
		assert.Equal(t, 1, srv.count("other.test"))

		st := e.Stats()
		assert.Equal(t, int64(1), st.BreakerTrips)
		assert.Equal(t, int64(1), st.BreakerRejections)
		synctest.Wait()
		assert.Equal(t, []string{"api.test:closed>open"}, ch.states())
		assert.Equal(t, opened.Add(10*time.Second), ch.got[0].Until)
		assert.ErrorContains(t, ch.got[0].Err, "503")
	})
}

func TestBreakerHalfOpensAfterCooldownAndClosesOnProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newHostServer()
		srv.set("api.test", 500)
		var ch changes
		e := virtualEngine(t, engine.Config{
			HTTPClient:      srv.client(),
			Retry:           engine.Retry{MaxAttempts: 1},
			Breaker:         engine.Breaker{ConsecutiveFailures: 2, Cooldown: 5 * time.Second, Probes: 2},
			OnBreakerChange: ch.hook,
		})
		ctx := context.Background()
		for range 2 {
			require.Error(t, fetchErr(ctx, e, "/x"))
		}
		require.ErrorIs(t, fetchErr(ctx, e, "/x"), errors.ErrCircuitOpen)
		advance(4 * time.Second)
		require.ErrorIs(t, fetchErr(ctx, e, "/x"), errors.ErrCircuitOpen, "still open before the cooldown ends")

		// Half-open: a failed probe opens it again for a whole cooldown.
		advance(time.Second)
		var he *errors.HTTPError
		require.ErrorAs(t, fetchErr(ctx, e, "/x"), &he, "the first probe is sent")
		require.ErrorIs(t, fetchErr(ctx, e, "/x"), errors.ErrCircuitOpen)
		assert.Equal(t, 3, srv.count("api.test"))

		// The host recovers: Probes successes close the breaker.
		srv.set("api.test", 200)
		advance(5 * time.Second)
		require.NoError(t, fetchErr(ctx, e, "/x"))
		require.NoError(t, fetchErr(ctx, e, "/x"))
		for range 5 {
			require.NoError(t, fetchErr(ctx, e, "/x"))
		}
		synctest.Wait()
		assert.Equal(t, []string{
			"api.test:closed>open", "api.test:open>half-open", "api.test:half-open>open",
			"api.test:open>half-open", "api.test:half-open>closed",
		}, ch.states())
		assert.Equal(t, int64(2), e.Stats().BreakerTrips)
	})
}

func TestBreakerHalfOpenLetsOnlyProbesThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int64
		fail := atomic.Bool{}
		fail.Store(true)
		e := virtualEngine(t, engine.Config{
			Workers: 8,
			HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
				calls.Add(1)
				if fail.Load() {
					return answer(r, 502, ""), nil
				}
				<-release
				return answer(r, 200, ""), nil
			}),
			Retry:   engine.Retry{MaxAttempts: 1},
			Breaker: engine.Breaker{ConsecutiveFailures: 1, Cooldown: time.Second, Probes: 2},
		})
		ctx := context.Background()
		require.Error(t, fetchErr(ctx, e, "/x"))
		fail.Store(false)
		advance(time.Second)
		var futures []*engine.Future
		for i := range 6 {
			futures = append(futures, e.Submit(ctx, requests.New("GET", "/x/"+itoa(i))))
		}
		synctest.Wait()
		assert.Equal(t, int64(3), calls.Load(), "two probes in flight, no more")
		close(release)
		var ok, refused int
		for _, f := range futures {
			_, err := f.Await(ctx)
			switch {
			case err == nil:
				ok++
			case errors.Is(err, errors.ErrCircuitOpen):
				refused++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}
		assert.Equal(t, 2, ok)
		assert.Equal(t, 4, refused)
	})
}

func TestBreakerCountsOnlyServerFailures(t *testing.T) {
	for _, tc := range []struct {
		status int
		trips  bool
	}{{400, false}, {404, false}, {429, false}, {500, true}, {503, true}, {-1, true}} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newHostServer()
				srv.set("api.test", tc.status)
				e := virtualEngine(t, engine.Config{
					HTTPClient: srv.client(),
					Retry:      engine.Retry{MaxAttempts: 1},
					RateLimit:  engine.RateLimit{Adaptive: engine.Adaptive{Disabled: true}},
					Breaker:    engine.Breaker{ConsecutiveFailures: 3},
				})
				for range 4 {
					_ = fetchErr(context.Background(), e, "/x")
				}
				err := fetchErr(context.Background(), e, "/x")
				assert.Equal(t, tc.trips, errors.Is(err, errors.ErrCircuitOpen), "%v", err)
			})
		})
	}
}

func TestBreakerTripsOnFailureRatioInWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int64
		e := virtualEngine(t, engine.Config{
			HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
				if n.Add(1)%2 == 0 { // every other attempt fails: never 2 in a row
					return answer(r, 503, ""), nil
				}
				return answer(r, 200, ""), nil
			}),
			Retry:   engine.Retry{MaxAttempts: 1},
			Breaker: engine.Breaker{ConsecutiveFailures: 2, FailureRatio: 0.5, MinRequests: 10, Window: 10 * time.Second},
		})
		ctx := context.Background()
		for range 9 {
			_ = fetchErr(ctx, e, "/x")
		}
		assert.Zero(t, e.Stats().BreakerTrips, "fewer than MinRequests: not judged")
		_ = fetchErr(ctx, e, "/x") // the 10th, a failure: 5 of 10
		assert.Equal(t, int64(1), e.Stats().BreakerTrips)
		assert.ErrorIs(t, fetchErr(ctx, e, "/x"), errors.ErrCircuitOpen)
	})
}

func TestBreakerFailuresWithinWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newHostServer()
		srv.set("api.test", 503)
		e := virtualEngine(t, engine.Config{
			HTTPClient: srv.client(),
			Retry:      engine.Retry{MaxAttempts: 1},
			Breaker:    engine.Breaker{Failures: 3, Window: 10 * time.Second},
		})
		ctx := context.Background()
		// Failures spread wider than the window never add up to three.
		for range 6 {
			_ = fetchErr(ctx, e, "/x")
			advance(6 * time.Second)
		}
		assert.Zero(t, e.Stats().BreakerTrips)
		for range 3 {
			_ = fetchErr(ctx, e, "/x")
			advance(time.Second)
		}
		assert.Equal(t, int64(1), e.Stats().BreakerTrips)
	})
}

func TestBreakerRefusesARetryOnceOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newHostServer()
		srv.set("api.test", 503)
		e := virtualEngine(t, engine.Config{
			HTTPClient: srv.client(),
			Retry:      engine.Retry{MaxAttempts: 3},
			Breaker:    engine.Breaker{ConsecutiveFailures: 2},
		})
		err := fetchErr(context.Background(), e, "/x")
		require.ErrorIs(t, err, errors.ErrCircuitOpen)
		var re *errors.RequestError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 2, re.Attempts, "two attempts were sent, the third refused")
		assert.Equal(t, 2, srv.count("api.test"))
	})
}

func TestBreakerQueuedRequestsDoNotWaitBehindADeadHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newHostServer()
		srv.set("dead.test", -1)
		e := virtualEngine(t, engine.Config{
			Workers:    2,
			HTTPClient: srv.client(),
			Retry:      engine.Retry{MaxAttempts: 1},
			RateLimit:  engine.RateLimit{PerHost: engine.Rate{PerSecond: 1}},
			Breaker:    engine.Breaker{ConsecutiveFailures: 2},
		})
		ctx := context.Background()
		start := time.Now()
		var futures []*engine.Future
		for i := range 50 {
			futures = append(futures, e.Submit(ctx, requests.New("GET", "http://dead.test/x/"+itoa(i))))
		}
		live := e.Submit(ctx, requests.New("GET", "/ok"))
		refused := 0
		for _, f := range futures {
			if _, err := f.Await(ctx); errors.Is(err, errors.ErrCircuitOpen) {
				refused++
			}
		}
		assert.Equal(t, 48, refused)
		assert.Less(t, time.Since(start), 3*time.Second, "refusals do not wait for the host's rate limit")
		_, err := live.Await(ctx)
		require.NoError(t, err)
		assert.Equal(t, 2, srv.count("dead.test"))
	})
}

func TestBreakerPerRouteOverride(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newHostServer()
		srv.set("api.test/search", 503)
		e := virtualEngine(t, engine.Config{
			HTTPClient: srv.client(),
			Retry:      engine.Retry{MaxAttempts: 1},
			Breaker: engine.Breaker{
				ConsecutiveFailures: 10,
				Routes:              []engine.BreakerRoute{{Host: "api.test", Prefix: "/search", Policy: engine.BreakerPolicy{ConsecutiveFailures: 1}}},
				Hosts:               map[string]engine.BreakerPolicy{"off.test": {}},
			},
		})
		ctx := context.Background()
		_ = fetchErr(ctx, e, "/search")
		err := fetchErr(ctx, e, "/search/code")
		require.ErrorIs(t, err, errors.ErrCircuitOpen)
		assert.Contains(t, err.Error(), "api.test/search")
		require.NoError(t, fetchErr(ctx, e, "/items"), "the host's own breaker is apart from the route's")

		// A host whose policy sets no condition has no breaker.
		srv.set("off.test", 503)
		for range 20 {
			assert.NotErrorIs(t, fetchErr(ctx, e, "http://off.test/x"), errors.ErrCircuitOpen)
		}
	})
}

func TestBreakerConfigErrors(t *testing.T) {
	_, err := engine.New(engine.Config{BaseURL: "http://api.test", Breaker: engine.Breaker{
		ConsecutiveFailures: -1, FailureRatio: 1.5,
		Routes: []engine.BreakerRoute{{Host: "api.test", Prefix: "search"}},
		Hosts:  map[string]engine.BreakerPolicy{"http://x/": {Cooldown: -time.Second}},
	}})
	require.Error(t, err)
	for _, want := range []string{
		"Breaker.ConsecutiveFailures is negative", "Breaker.FailureRatio 1.5",
		`Breaker.Routes[0].Prefix "search" does not start with /`, `Breaker.Hosts: "http://x/" is not a host`,
		`Breaker.Hosts["http://x/"].Cooldown is negative (-1s)`,
	} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestBreakerAndHedgeMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rig := newOtelRig(t)
		srv := newHostServer()
		srv.set("dead.test", 503)
		e := virtualEngine(t, rig.apply(engine.Config{
			HTTPClient: srv.client(),
			Retry:      engine.Retry{MaxAttempts: 1},
			Breaker:    engine.Breaker{ConsecutiveFailures: 2},
		}))
		ctx := context.Background()
		for range 4 {
			_ = fetchErr(ctx, e, "http://dead.test/x")
		}
		m := rig.metrics(t)
		assert.Equal(t, int64(1), sum(t, m["courier.client.breaker.trips"]))
		assert.Equal(t, int64(2), sum(t, m["courier.client.breaker.rejections"]))
		assert.Equal(t, int64(1), gauge(t, m, "courier.client.breaker.open"))
		assert.Zero(t, sum(t, m["courier.client.hedges"]))
	})
}

func TestBreakerCooldownFollowsTheEnginesClock(t *testing.T) {
	clock := newFakeClock()
	srv := newHostServer()
	srv.set("api.test", 503)
	e, err := engine.New(engine.Config{BaseURL: "http://api.test", HTTPClient: srv.client(), Clock: clock,
		Retry:   engine.Retry{MaxAttempts: 1},
		Breaker: engine.Breaker{ConsecutiveFailures: 1, Cooldown: time.Hour, Probes: 1}})
	require.NoError(t, err)
	defer e.Close()
	ctx := context.Background()
	require.NotErrorIs(t, fetchErr(ctx, e, "/x"), errors.ErrCircuitOpen)
	err = fetchErr(ctx, e, "/x")
	require.ErrorIs(t, err, errors.ErrCircuitOpen)
	var coe *errors.CircuitOpenError
	errors.As(err, &coe)
	require.NotNil(t, coe)
	assert.Equal(t, clock.Now().Add(time.Hour), coe.Until)
	srv.set("api.test", 200)
	clock.Advance(time.Hour)
	require.NoError(t, fetchErr(ctx, e, "/x"), "an hour on the engine's clock, none in real time")
}

func TestBreakersAndLatenciesOfIdleHostsAreForgotten(t *testing.T) {
	clock := newFakeClock()
	srv := newHostServer()
	e, err := engine.New(engine.Config{BaseURL: "http://api.test", HTTPClient: srv.client(), Clock: clock,
		Breaker: engine.Breaker{ConsecutiveFailures: 5},
		Hedge:   engine.Hedge{Delay: time.Hour}})
	require.NoError(t, err)
	defer e.Close()
	ctx := context.Background()
	for i := range 200 {
		require.NoError(t, fetchErr(ctx, e, "http://host"+itoa(i)+".test/x"))
	}
	b, l := engine.Remembered(e)
	require.Equal(t, 200, b)
	require.Equal(t, 200, l)
	clock.Advance(11 * time.Minute)
	// Forgetting is swept as the table grows: by the time it has doubled
	// since the last sweep (256 here), the idle hosts are gone.
	for i := range 60 {
		require.NoError(t, fetchErr(ctx, e, "http://new"+itoa(i)+".test/x"))
	}
	b, l = engine.Remembered(e)
	assert.Equal(t, 60, b, "a crawler's idle hosts do not pile up")
	assert.Equal(t, 60, l)
}
