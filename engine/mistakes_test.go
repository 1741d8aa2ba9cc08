package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
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

// A caller's mistake gets an error naming it, never a panic or a stall:
// Submit with a nil context used to panic in the caller's goroutine.
func TestNilContextGetsAnErrorNotAPanic(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL})
	var nilCtx context.Context // as a caller would pass it by mistake
	isNilCtx := func(t *testing.T, err error) {
		t.Helper()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "nil Context")
	}

	_, err := e.Submit(nilCtx, requests.New("GET", "/x")).Await(context.Background())
	isNilCtx(t, err)
	f, err := e.TrySubmit(nilCtx, requests.New("GET", "/x"))
	assert.Nil(t, f)
	isNilCtx(t, err)
	_, err = e.Do(nilCtx, requests.New("GET", "/x"))
	isNilCtx(t, err)
	_, err = e.Get(nilCtx, "/x")
	isNilCtx(t, err)
	reqs := []*requests.Request{requests.New("GET", "/a"), requests.New("GET", "/b")}
	var results []engine.Result
	for r := range e.Stream(nilCtx, slices.Values(reqs), 0) {
		results = append(results, r)
	}
	require.Len(t, results, 2, "every request gets its result")
	for _, r := range results {
		isNilCtx(t, r.Err)
	}
	isNilCtx(t, e.Shutdown(nilCtx))

	// Await(nil) on a future still pending does not wait forever.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer slow.Close()
	defer close(release)
	pending := e.Submit(context.Background(), requests.New("GET", slow.URL+"/slow"))
	_, err = pending.Await(nilCtx)
	isNilCtx(t, err)

	resp, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
	require.NoError(t, err, "the engine goes on")
	assert.Equal(t, 200, resp.Status)

	// Await(nil) on a future that has resolved gives its result: it used to
	// look at a channel made only on demand, and said "nil Context".
	done := e.Submit(context.Background(), requests.New("GET", "/x"))
	_, err = done.Await(context.Background())
	require.NoError(t, err)
	resp, err = done.Await(nilCtx)
	require.NoError(t, err, "a resolved future answers Await(nil)")
	assert.Equal(t, 200, resp.Status)
}

// A Backoff policy returning more than MaxDelay used to be obeyed.
func TestBackoffIsClampedToMaxDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		var calls atomic.Int64
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			if calls.Add(1) == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}}, engine.Config{Retry: engine.Retry{
			MaxDelay: 50 * time.Millisecond,
			Backoff:  func(int, time.Duration, time.Duration) time.Duration { return 24 * time.Hour },
		}})
		resp, err := e.Get(context.Background(), "/x")
		require.NoError(t, err)
		assert.Equal(t, 2, resp.Attempts)
		assert.Equal(t, []time.Duration{0, 50 * time.Millisecond}, arr.of("a.test/x"), "the retry waited MaxDelay, not a day")
	})
}

// The session error used to read "session expired: session expired" when a
// Refresher said so itself.
func TestSessionErrorSaysSessionExpiredOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "expired", http.StatusUnauthorized)
	}))
	defer srv.Close()
	for _, refused := range []error{errors.ErrSessionExpired, fmt.Errorf("token revoked: %w", errors.ErrSessionExpired)} {
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Auth: engine.Auth{AccessToken: "a",
			Refresher: func(context.Context, string) (engine.Tokens, error) { return engine.Tokens{}, refused }}})
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		require.ErrorIs(t, err, errors.ErrSessionExpired)
		assert.Equal(t, 1, strings.Count(err.Error(), "session expired"), "%q", err.Error())
	}
}
