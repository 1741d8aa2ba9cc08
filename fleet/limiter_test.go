package fleet_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
	"github.com/courier-go/courier/requests"
)

func newLimiter(t *testing.T, srv *redistest.Server, name string, opts fleet.LimiterOptions) *fleet.Limiter {
	t.Helper()
	if opts.Heartbeat == 0 {
		opts.Heartbeat = time.Hour // no beats but the first, unless the test wants them
	}
	l, err := fleet.NewLimiter(client(t, srv), name, opts)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

var (
	global = engine.LimitKey{}
	hostA  = engine.LimitKey{Host: "a.example"}
)

// tryNow waits only if the turn is now: a short deadline makes Wait fail
// at once with a WaitError when the turn is further off.
func tryNow(l *fleet.Limiter, key engine.LimitKey, r engine.Rate) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return l.Wait(ctx, key, r)
}

func countGranted(t *testing.T, ls []*fleet.Limiter, key engine.LimitKey, r engine.Rate, tries int) int {
	t.Helper()
	granted := 0
	for i := 0; i < tries; i++ {
		err := tryNow(ls[i%len(ls)], key, r)
		if err == nil {
			granted++
			continue
		}
		var werr *fleet.WaitError
		require.ErrorAs(t, err, &werr)
	}
	return granted
}

// slow is one attempt per 10 s: only the burst goes at once.
func slow(burst int) engine.Rate { return engine.Rate{PerSecond: 0.1, Burst: burst} }

func TestLimiterBurstIsSharedByTheFleet(t *testing.T) {
	// Four processes, a burst of 5 and one attempt per 10 s: together
	// they get exactly 5 attempts through at once, not 4 × 5.
	srv := redistest.Start(t, redistest.Options{})
	var ls []*fleet.Limiter
	for range 4 {
		ls = append(ls, newLimiter(t, srv, "burst", fleet.LimiterOptions{}))
	}
	assert.Equal(t, 5, countGranted(t, ls, global, slow(5), 20))
}

func TestLimiterKeysAreSeparate(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ls := []*fleet.Limiter{newLimiter(t, srv, "keys", fleet.LimiterOptions{}), newLimiter(t, srv, "keys", fleet.LimiterOptions{})}
	assert.Equal(t, 2, countGranted(t, ls, hostA, slow(2), 6))
	assert.Equal(t, 2, countGranted(t, ls, engine.LimitKey{Host: "b.example"}, slow(2), 6), "each host has its own")
	assert.Equal(t, 1, countGranted(t, ls, engine.LimitKey{Host: "a.example", Route: "/search"}, slow(1), 6), "a route has its own")
	assert.Equal(t, 3, countGranted(t, ls, global, slow(3), 6), "so has the global limit")
	assert.Equal(t, 6, countGranted(t, ls, engine.LimitKey{Host: "c.example"}, engine.Rate{}, 6), "no rate, no limit")
}

func TestLimiterWaitPastTheDeadlineFailsAtOnceAndReservesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	l := newLimiter(t, srv, "deadline", fleet.LimiterOptions{})
	require.NoError(t, tryNow(l, hostA, slow(1)))
	for range 3 {
		err := tryNow(l, hostA, slow(1))
		var werr *fleet.WaitError
		require.ErrorAs(t, err, &werr)
		assert.False(t, werr.Held)
		assert.Equal(t, "a.example", werr.Key)
		// Nothing reserved: the wait does not grow with the failed tries.
		assert.LessOrEqual(t, werr.Wait, 10*time.Second)
		assert.Greater(t, werr.Wait, 9*time.Second)
		assert.Contains(t, err.Error(), "rate limit")
	}
}

func TestLimiterSpacesTheFleetsAttempts(t *testing.T) {
	// 4 processes × 10 attempts at 50/s with a burst of 1 cannot finish in
	// less than 39 intervals of 20 ms. (Only a lower bound: a slow machine
	// makes it slower, never faster.)
	srv := redistest.Start(t, redistest.Options{})
	var ls []*fleet.Limiter
	for range 4 {
		ls = append(ls, newLimiter(t, srv, "spacing", fleet.LimiterOptions{}))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() {
			for range 10 {
				assert.NoError(t, l.Wait(context.Background(), global, engine.Rate{PerSecond: 50, Burst: 1}))
			}
		})
	}
	wg.Wait()
	assert.GreaterOrEqual(t, time.Since(start), 39*20*time.Millisecond)
}

func TestLimiterHoldReachesTheOtherProcesses(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLimiter(t, srv, "hold", fleet.LimiterOptions{})
	b := newLimiter(t, srv, "hold", fleet.LimiterOptions{})
	until := time.Now().Add(30 * time.Second)
	a.Hold(hostA, until)
	assert.Equal(t, until, a.HeldUntil(hostA))
	require.Eventually(t, func() bool { return b.HeldUntil(hostA).After(until.Add(-time.Second)) },
		10*time.Second, time.Millisecond, "b hears of the hold")
	assert.True(t, b.HeldUntil(engine.LimitKey{Host: "other.example"}).IsZero(), "other hosts go on")

	// A shorter hold does not shorten a longer one.
	b.Hold(hostA, time.Now().Add(time.Millisecond))
	assert.True(t, a.HeldUntil(hostA).Equal(until))
}

func TestLimiterWaitHonoursAHoldItDidNotHearOf(t *testing.T) {
	// A hold whose notice was lost (written while this process's
	// subscription was down) still holds its Waits: the script checks it.
	srv := redistest.Start(t, redistest.Options{})
	l := newLimiter(t, srv, "missed", fleet.LimiterOptions{})
	require.NoError(t, client(t, srv).Set(context.Background(), "courier:{missed}:hold:a.example", "1", 30*time.Second).Err())
	assert.True(t, l.HeldUntil(hostA).IsZero(), "no notice came")
	err := tryNow(l, hostA, slow(5))
	var werr *fleet.WaitError
	require.ErrorAs(t, err, &werr)
	assert.True(t, werr.Held)
	assert.Contains(t, err.Error(), "hold")
	assert.False(t, l.HeldUntil(hostA).IsZero(), "and now it knows")
}

func TestLimiterHoldEnds(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLimiter(t, srv, "hold-ends", fleet.LimiterOptions{})
	b := newLimiter(t, srv, "hold-ends", fleet.LimiterOptions{})
	a.Hold(hostA, time.Now().Add(30*time.Millisecond))
	start := time.Now()
	require.NoError(t, b.Wait(context.Background(), hostA, slow(5)))
	assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond, "b waited for the hold")
}

// countingHook counts the commands a client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestLimiterOneRoundTripPerWait(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	hook := &countingHook{}
	rdb.AddHook(hook)
	l, err := fleet.NewLimiter(rdb, "trips", fleet.LimiterOptions{Heartbeat: time.Hour})
	require.NoError(t, err)
	defer l.Close()
	fast := engine.Rate{PerSecond: 1e6, Burst: 100}
	require.NoError(t, l.Wait(context.Background(), hostA, fast)) // loads the script
	before := hook.n.Load()
	const n = 50
	for range n {
		require.NoError(t, l.Wait(context.Background(), hostA, fast))
		l.HeldUntil(hostA) // from memory
	}
	assert.EqualValues(t, n, hook.n.Load()-before, "one command per Wait")
}

func TestLimiterCountsLiveProcesses(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	opts := fleet.LimiterOptions{Heartbeat: 10 * time.Millisecond}
	a := newLimiter(t, srv, "live", opts)
	b := newLimiter(t, srv, "live", opts)
	c := newLimiter(t, srv, "live", opts)
	require.Eventually(t, func() bool { return a.Live() == 3 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	require.Eventually(t, func() bool { return a.Live() == 2 && b.Live() == 2 }, 10*time.Second, 5*time.Millisecond)
}

func TestLimiterFallsBackToItsShareWhileRedisIsDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	opts := fleet.LimiterOptions{Retry: time.Hour}
	var ls []*fleet.Limiter
	for range 4 {
		ls = append(ls, newLimiter(t, srv, "fallback", opts))
	}
	l := ls[3]
	require.Equal(t, 4, l.Live(), "four processes at the last heartbeat")
	srv.Stop()
	// Its share of a burst of 8: 8 / 4 = 2 at once, then one per 40 s.
	granted := 0
	for range 6 {
		if tryNow(l, global, slow(8)) == nil {
			granted++
		}
	}
	assert.Equal(t, 2, granted)
	assert.True(t, l.Fallback())

	// Holds are kept locally meanwhile.
	until := time.Now().Add(time.Minute)
	l.Hold(hostA, until)
	assert.Equal(t, until, l.HeldUntil(hostA))
}

func TestLimiterReturnsToRedisWhenItIsBack(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	opts := fleet.LimiterOptions{Retry: time.Millisecond}
	a := newLimiter(t, srv, "back", opts)
	b := newLimiter(t, srv, "back", opts)
	require.NoError(t, tryNow(a, global, slow(3)))
	srv.Stop()
	require.NoError(t, tryNow(b, global, slow(3)), "the local share lets one through")
	srv.Restart()
	// Back on Redis, the fleet's bucket (one used before the outage) has
	// room for two more, however many tries.
	require.Eventually(t, func() bool { return tryNow(a, global, slow(3)) == nil }, 10*time.Second, time.Millisecond)
	granted := 1
	for range 8 {
		if tryNow(a, global, slow(3)) == nil {
			granted++
		}
	}
	assert.Equal(t, 2, granted)
	assert.False(t, a.Fallback())
}

func TestEnginesShareTheFleetsLimitsAndHolds(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var seen atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if r.URL.Path == "/busy" {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{}`))
	}))
	defer api.Close()
	newEngine := func(name string, rl engine.RateLimit) (*engine.Engine, *fleet.Limiter) {
		l := newLimiter(t, srv, name, fleet.LimiterOptions{})
		rl.Limiter = l
		e, err := engine.New(engine.Config{BaseURL: api.URL, Retry: engine.Retry{MaxAttempts: 1}, RateLimit: rl})
		require.NoError(t, err)
		t.Cleanup(func() { e.Close() })
		return e, l
	}
	get := func(e *engine.Engine, path string, d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := e.Do(ctx, requests.New("GET", path, requests.WithoutDedup()))
		return err
	}

	t.Run("limits", func(t *testing.T) {
		// A fleet limit of 3 at once, then one per 10 s: two engines get 3
		// requests through, and the next ones wait.
		seen.Store(0)
		a, _ := newEngine("engines-limit", engine.RateLimit{PerSecond: 0.1, Burst: 3})
		b, _ := newEngine("engines-limit", engine.RateLimit{PerSecond: 0.1, Burst: 3})
		require.NoError(t, get(a, "/1", time.Minute))
		require.NoError(t, get(b, "/2", time.Minute))
		require.NoError(t, get(a, "/3", time.Minute))
		assert.ErrorIs(t, get(b, "/4", 50*time.Millisecond), context.DeadlineExceeded)
		assert.ErrorIs(t, get(a, "/5", 50*time.Millisecond), context.DeadlineExceeded)
		assert.EqualValues(t, 3, seen.Load())
	})

	t.Run("holds", func(t *testing.T) {
		// Engine a gets 429 + Retry-After: 30; engine b then holds its
		// requests to that host too, and sends none.
		seen.Store(0)
		a, _ := newEngine("engines-hold", engine.RateLimit{})
		b, lb := newEngine("engines-hold", engine.RateLimit{})
		var he *errors.HTTPError
		require.ErrorAs(t, get(a, "/busy", time.Minute), &he)
		require.Equal(t, 429, he.Status)
		require.Eventually(t, func() bool { return !lb.HeldUntil(engine.LimitKey{Host: mustHost(t, api.URL)}).IsZero() },
			10*time.Second, time.Millisecond, "b hears of the hold")
		assert.ErrorIs(t, get(b, "/x", 50*time.Millisecond), context.DeadlineExceeded)
		assert.EqualValues(t, 1, seen.Load(), "b sent nothing to the held host")
	})
}

func mustHost(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.Host
}
