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
	"github.com/courier-go/courier/requests"
)

func TestMiddlewareA429HoldsTheHostForTheOtherEngines(t *testing.T) {
	// Engine a gets 429 + Retry-After: 30; engine b (another process of the
	// fleet) then does not send to that host at all: its request fails at
	// once because the hold does not fit its deadline.
	srv := redistest.Start(t, redistest.Options{})
	var seen atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1) == 1 {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{}`))
	}))
	defer api.Close()
	host := mustHost(t, api.URL)

	newEngine := func() *engine.Engine {
		l := newLimiter(t, srv, "mw", fleet.LimiterOptions{})
		e, err := engine.New(engine.Config{
			BaseURL:    api.URL,
			Retry:      engine.Retry{MaxAttempts: 1},
			Middleware: []engine.Middleware{l.Middleware(0)},
		})
		require.NoError(t, err)
		t.Cleanup(func() { e.Close() })
		return e
	}
	a, b := newEngine(), newEngine()

	_, err := a.Get(context.Background(), "/x")
	var he *errors.HTTPError
	require.ErrorAs(t, err, &he)
	require.Equal(t, 429, he.Status)

	_, err = b.Do(context.Background(), requests.New("GET", "/y", requests.WithTimeout(5*time.Second)))
	var werr *fleet.WaitError
	require.ErrorAs(t, err, &werr)
	assert.True(t, werr.Held)
	assert.Equal(t, host, werr.Host)
	assert.EqualValues(t, 1, seen.Load(), "b sent nothing to the held host")
}

func TestMiddlewarePacesEveryAttempt(t *testing.T) {
	// A burst of 3 and one request per 10 s for the fleet: of 6 requests
	// from two engines, 3 reach the server.
	srv := redistest.Start(t, redistest.Options{})
	var seen atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		w.Write([]byte(`{}`))
	}))
	defer api.Close()
	var engines []*engine.Engine
	for range 2 {
		l := newLimiter(t, srv, "mw-pace", fleet.LimiterOptions{Global: fleet.Limit{PerSecond: 0.1, Burst: 3}})
		e, err := engine.New(engine.Config{BaseURL: api.URL, Retry: engine.Retry{MaxAttempts: 1}, Middleware: []engine.Middleware{l.Middleware(0)}})
		require.NoError(t, err)
		t.Cleanup(func() { e.Close() })
		engines = append(engines, e)
	}
	ok := 0
	for i := range 6 {
		// The attempt's deadline is shorter than the 10 s turn: the
		// limiter says so at once instead of waiting.
		_, err := engines[i%2].Do(context.Background(), requests.New("GET", "/x", requests.WithoutDedup(), requests.WithTimeout(5*time.Second)))
		if err == nil {
			ok++
		}
	}
	assert.Equal(t, 3, ok)
	assert.EqualValues(t, 3, seen.Load())
}

func mustHost(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u.Host
}
