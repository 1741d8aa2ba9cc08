package fleet_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
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

// tryNow waits only if the turn is now: a short deadline makes Wait fail
// at once with a WaitError when the turn is further off.
func tryNow(l *fleet.Limiter, host string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	return l.Wait(ctx, host)
}

func countGranted(t *testing.T, ls []*fleet.Limiter, host string, tries int) int {
	t.Helper()
	granted := 0
	for i := 0; i < tries; i++ {
		err := tryNow(ls[i%len(ls)], host)
		if err == nil {
			granted++
			continue
		}
		var werr *fleet.WaitError
		require.ErrorAs(t, err, &werr)
	}
	return granted
}

func TestLimiterBurstIsSharedByTheFleet(t *testing.T) {
	// Four processes, a burst of 5 and one request per 10 s: together
	// they get exactly 5 requests through at once, not 4 × 5.
	srv := redistest.Start(t, redistest.Options{})
	var ls []*fleet.Limiter
	for range 4 {
		ls = append(ls, newLimiter(t, srv, "burst", fleet.LimiterOptions{Global: fleet.Limit{PerSecond: 0.1, Burst: 5}}))
	}
	assert.Equal(t, 5, countGranted(t, ls, "api.example", 20))
}

func TestLimiterWaitPastTheDeadlineFailsAtOnceAndReservesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	l := newLimiter(t, srv, "deadline", fleet.LimiterOptions{Global: fleet.Limit{PerSecond: 0.1, Burst: 1}})
	require.NoError(t, tryNow(l, "h"))
	for range 3 {
		err := tryNow(l, "h")
		var werr *fleet.WaitError
		require.ErrorAs(t, err, &werr)
		assert.False(t, werr.Held)
		// Nothing reserved: the wait does not grow with the failed tries.
		assert.LessOrEqual(t, werr.Wait, 10*time.Second)
		assert.Greater(t, werr.Wait, 9*time.Second)
		assert.Contains(t, err.Error(), "rate limit")
	}
}

func TestLimiterSpacesTheFleetsRequests(t *testing.T) {
	// 4 processes × 10 requests at 50/s with a burst of 1 cannot finish in
	// less than 39 intervals of 20 ms. (Only a lower bound: a slow machine
	// makes it slower, never faster.)
	srv := redistest.Start(t, redistest.Options{})
	var ls []*fleet.Limiter
	for range 4 {
		ls = append(ls, newLimiter(t, srv, "spacing", fleet.LimiterOptions{Global: fleet.Limit{PerSecond: 50, Burst: 1}}))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() {
			for range 10 {
				assert.NoError(t, l.Wait(context.Background(), "h"))
			}
		})
	}
	wg.Wait()
	assert.GreaterOrEqual(t, time.Since(start), 39*20*time.Millisecond)
}

func TestLimiterPerHostLimitsAreFleetWide(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	opts := fleet.LimiterOptions{
		PerHost: fleet.Limit{PerSecond: 0.1, Burst: 2},
		Hosts:   map[string]fleet.Limit{"slow.example": {PerSecond: 0.1, Burst: 1}, "free.example": {}},
	}
	ls := []*fleet.Limiter{newLimiter(t, srv, "hosts", opts), newLimiter(t, srv, "hosts", opts)}
	assert.Equal(t, 1, countGranted(t, ls, "slow.example", 6), "the override")
	assert.Equal(t, 2, countGranted(t, ls, "a.example", 6), "the default per host")
	assert.Equal(t, 2, countGranted(t, ls, "b.example", 6), "each host has its own")
	assert.Equal(t, 6, countGranted(t, ls, "free.example", 6), "an override without a rate does not limit")
}

func TestLimiterHoldStopsTheWholeFleetForThatHost(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLimiter(t, srv, "hold", fleet.LimiterOptions{})
	b := newLimiter(t, srv, "hold", fleet.LimiterOptions{})
	a.Hold(context.Background(), "busy.example", 30*time.Second)
	err := tryNow(b, "busy.example")
	var werr *fleet.WaitError
	require.ErrorAs(t, err, &werr, "another process waits out the hold")
	assert.True(t, werr.Held)
	assert.Greater(t, werr.Wait, 25*time.Second)
	assert.Contains(t, err.Error(), "hold")
	assert.NoError(t, tryNow(b, "other.example"), "other hosts go on")

	// A shorter hold does not shorten a longer one.
	b.Hold(context.Background(), "busy.example", time.Millisecond)
	assert.Error(t, tryNow(b, "busy.example"))
}

func TestLimiterHoldEnds(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newLimiter(t, srv, "hold-ends", fleet.LimiterOptions{})
	b := newLimiter(t, srv, "hold-ends", fleet.LimiterOptions{})
	a.Hold(context.Background(), "h", 30*time.Millisecond)
	start := time.Now()
	require.NoError(t, b.Wait(context.Background(), "h"))
	assert.GreaterOrEqual(t, time.Since(start), 25*time.Millisecond, "b waited for the hold")
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

func TestLimiterOneRoundTripPerRequest(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	hook := &countingHook{}
	rdb.AddHook(hook)
	l, err := fleet.NewLimiter(rdb, "trips", fleet.LimiterOptions{
		Global:    fleet.Limit{PerSecond: 1e6, Burst: 100},
		PerHost:   fleet.Limit{PerSecond: 1e6, Burst: 100},
		Heartbeat: time.Hour,
	})
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.Wait(context.Background(), "h")) // loads the script
	before := hook.n.Load()
	const n = 50
	for range n {
		require.NoError(t, l.Wait(context.Background(), "h"))
	}
	assert.EqualValues(t, n, hook.n.Load()-before, "one command per request")
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
	opts := fleet.LimiterOptions{Global: fleet.Limit{PerSecond: 0.1, Burst: 8}, Retry: time.Hour}
	var ls []*fleet.Limiter
	for range 4 {
		ls = append(ls, newLimiter(t, srv, "fallback", opts))
	}
	l := ls[3]
	require.Equal(t, 4, l.Live(), "four processes at the last heartbeat")
	srv.Stop()
	// Its share: 8 / 4 = 2 at once, then one per 40 s.
	granted := 0
	for range 6 {
		if tryNow(l, "h") == nil {
			granted++
		}
	}
	assert.Equal(t, 2, granted)
	assert.True(t, l.Fallback())
}

func TestLimiterReturnsToRedisWhenItIsBack(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	opts := fleet.LimiterOptions{Global: fleet.Limit{PerSecond: 0.1, Burst: 3}, Retry: time.Millisecond}
	a := newLimiter(t, srv, "back", opts)
	b := newLimiter(t, srv, "back", opts)
	require.NoError(t, tryNow(a, "h"))
	srv.Stop()
	require.NoError(t, tryNow(b, "h"), "the local share lets one through")
	srv.Restart()
	// Back on Redis, the fleet's bucket (one used before the outage) has
	// room for two more, however many tries.
	var granted atomic.Int32
	for range 8 {
		if tryNow(a, "h") == nil {
			granted.Add(1)
		}
	}
	assert.EqualValues(t, 2, granted.Load())
	assert.False(t, a.Fallback())
}

func TestNewLimiterRejectsBadLimits(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	for _, opts := range []fleet.LimiterOptions{
		{Global: fleet.Limit{PerSecond: -1}},
		{PerHost: fleet.Limit{PerSecond: 1, Burst: -1}},
		{Hosts: map[string]fleet.Limit{"h": {PerSecond: -2}}},
	} {
		_, err := fleet.NewLimiter(client(t, srv), "bad", opts)
		assert.Error(t, err, fmt.Sprint(opts))
	}
}
