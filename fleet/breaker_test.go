package fleet_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
)

func newBreakerStore(t *testing.T, srv *redistest.Server, name string) *fleet.BreakerStore {
	t.Helper()
	s, err := fleet.NewBreakerStore(client(t, srv), name)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// downAPI answers 503 to everything and counts what reaches it.
func downAPI(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var calls atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(api.Close)
	return api, &calls
}

func breakerEngine(t *testing.T, base string, store engine.BreakerStore) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Config{
		BaseURL: base,
		Retry:   engine.Retry{MaxAttempts: 1},
		Breaker: engine.Breaker{ConsecutiveFailures: 2, Cooldown: time.Minute, Store: store},
	})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	return e
}

func TestBreakerTripInOneEngineOpensItInAnother(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	api, calls := downAPI(t)
	a := breakerEngine(t, api.URL, newBreakerStore(t, srv, "trip"))
	storeB := newBreakerStore(t, srv, "trip")
	b := breakerEngine(t, api.URL, storeB)
	ctx := context.Background()

	// B asks about the host first, so what it learns later comes by the
	// channel, not by its first read.
	_, err := b.Get(ctx, "/x")
	require.Error(t, err)
	require.NotErrorIs(t, err, errors.ErrCircuitOpen)

	for range 2 {
		_, err := a.Get(ctx, "/x")
		require.NotErrorIs(t, err, errors.ErrCircuitOpen)
	}
	_, err = a.Get(ctx, "/x")
	require.ErrorIs(t, err, errors.ErrCircuitOpen)

	u, _ := url.Parse(api.URL)
	key := engine.LimitKey{Host: u.Host}
	require.Eventually(t, func() bool { until, _ := storeB.OpenUntil(key); return !until.IsZero() },
		5*time.Second, 5*time.Millisecond, "B hears of A's trip")
	before := calls.Load()
	_, err = b.Get(ctx, "/y")
	require.ErrorIs(t, err, errors.ErrCircuitOpen, "B's breaker is open though B saw one failure only")
	var coe *errors.CircuitOpenError
	ok := errors.As(err, &coe)
	require.True(t, ok)
	assert.WithinDuration(t, time.Now().Add(time.Minute), coe.Until, 5*time.Second)
	assert.ErrorContains(t, err, "503", "the cause travels with the opening")
	assert.Equal(t, before, calls.Load(), "B sent nothing")
	assert.Zero(t, b.Stats().BreakerTrips, "B did not trip: it was told")

	// A process that starts during the outage learns of it on its first
	// request to the host.
	c := breakerEngine(t, api.URL, newBreakerStore(t, srv, "trip"))
	_, err = c.Get(ctx, "/z")
	require.ErrorIs(t, err, errors.ErrCircuitOpen)
	assert.Equal(t, before, calls.Load())

	// Another fleet is apart.
	d := breakerEngine(t, api.URL, newBreakerStore(t, srv, "other"))
	_, err = d.Get(ctx, "/z")
	require.NotErrorIs(t, err, errors.ErrCircuitOpen)
}

func TestBreakerStoreWithoutRedisKeepsLocalBreakers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	proxy := srv.Proxy(t)
	rdb, err := fleet.NewClient(proxy.URL())
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })
	store, err := fleet.NewBreakerStore(rdb, "down")
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	proxy.Cut()

	api, calls := downAPI(t)
	e := breakerEngine(t, api.URL, store)
	ctx := context.Background()
	for range 2 {
		_, err := e.Get(ctx, "/x")
		require.NotErrorIs(t, err, errors.ErrCircuitOpen)
	}
	_, err = e.Get(ctx, "/x")
	require.ErrorIs(t, err, errors.ErrCircuitOpen, "the engine's own breaker works without Redis")
	assert.Equal(t, int64(2), calls.Load())
}
