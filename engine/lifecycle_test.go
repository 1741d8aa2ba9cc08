package engine_test

import (
	"context"
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

func TestShutdownDrainsQueuedWork(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(time.Millisecond)
	}))
	defer srv.Close()
	e, err := engine.New(engine.Config{BaseURL: srv.URL, Workers: 2})
	require.NoError(t, err)
	ctx := context.Background()
	futures := make([]*engine.Future, 50)
	for i := range futures {
		futures[i] = e.Submit(ctx, requests.New("GET", "/x", requests.WithQuery("i", itoa(i))))
	}
	require.NoError(t, e.Shutdown(ctxTimeout(t, 5*time.Second)))
	for _, f := range futures {
		_, err := f.Await(ctx)
		assert.NoError(t, err)
	}
	assert.EqualValues(t, 50, calls.Load())
	_, err = e.Get(ctx, "/after")
	assert.ErrorIs(t, err, errors.ErrClosed)
	_, err = e.TrySubmit(ctx, requests.New("GET", "/after"))
	assert.ErrorIs(t, err, errors.ErrClosed)
	require.NoError(t, e.Shutdown(ctx), "idempotent")
	require.NoError(t, e.Close(), "Close after Shutdown")
}

func TestShutdownReturnsCtxErrThenCloseCancels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedAPI()
		defer close(g.release)
		cfg := g.config()
		cfg.Workers = 1
		e, err := engine.New(cfg)
		require.NoError(t, err)
		ctx := context.Background()
		inflight := e.Submit(ctx, requests.New("GET", "/a"))
		queued := e.Submit(ctx, requests.New("GET", "/b"))
		synctest.Wait()
		require.EqualValues(t, 1, g.calls.Load(), "one in flight, one queued")

		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		assert.ErrorIs(t, e.Shutdown(short), context.DeadlineExceeded)
		assert.Equal(t, 20*time.Millisecond, time.Since(start), "Shutdown waited until its ctx ended")
		select {
		case <-g.cancelled:
			t.Fatal("Shutdown cancelled the in-flight attempt")
		default:
		}

		require.NoError(t, e.Close())
		require.NoError(t, e.Close(), "idempotent")
		for _, f := range []*engine.Future{inflight, queued} {
			_, err := f.Await(ctx)
			assert.ErrorIs(t, err, errors.ErrClosed)
		}
		synctest.Wait()
		select {
		case <-g.cancelled:
		default:
			t.Fatal("Close did not cancel the in-flight attempt")
		}
		_, err = e.Get(ctx, "/c")
		assert.ErrorIs(t, err, errors.ErrClosed)
	})
}

func TestConfigErrorsNameTheProblem(t *testing.T) {
	for _, tc := range []struct {
		cfg  engine.Config
		want string
	}{
		{engine.Config{}, "BaseURL is empty"},
		{engine.Config{BaseURL: "ftp://x"}, "scheme must be http or https"},
		{engine.Config{BaseURL: "http://"}, "no host"},
		{engine.Config{BaseURL: "http://x", Workers: -1}, "Workers is negative"},
		{engine.Config{BaseURL: "http://x", QueueSize: -3}, "QueueSize is negative"},
		{engine.Config{BaseURL: "http://x", Auth: engine.Auth{LockLease: -time.Second}}, "Auth.LockLease is negative"},
		{engine.Config{BaseURL: "http://x", Auth: engine.Auth{Refresh: &engine.RefreshConfig{}}}, "Auth.Refresh.Path is empty"},
		{engine.Config{BaseURL: "http://x", Auth: engine.Auth{Refresh: &engine.RefreshConfig{Path: "/r"},
			Refresher: func(context.Context, string) (engine.Tokens, error) { return engine.Tokens{}, nil }}}, "both set"},
		{engine.Config{BaseURL: "http://x", Middleware: []engine.Middleware{nil}}, "Middleware[0] is nil"},
		{engine.Config{BaseURL: "http://x", Headers: http.Header{"Bad Name": {"v"}}}, `invalid header name "Bad Name"`},
	} {
		_, err := engine.New(tc.cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestBadRequestsFailWithAClearError(t *testing.T) {
	e := newEngine(t, engine.Config{BaseURL: "http://127.0.0.1:1"})
	ctx := context.Background()
	_, err := e.Do(ctx, requests.New("GET", ""))
	assert.ErrorContains(t, err, "empty path")
	_, err = e.Do(ctx, requests.New("GE T", "/x"))
	assert.ErrorContains(t, err, `invalid method "GE T"`)
	_, err = e.Get(ctx, "//evil.test/x")
	assert.ErrorContains(t, err, `"//evil.test/x": path starts with //`, "regression: FuzzDedupKey found //host paths silently resolved to the base URL")
	_, err = e.Post(ctx, "/x", requests.WithJSON(func() {}))
	assert.ErrorContains(t, err, "POST /x")
	assert.ErrorContains(t, err, "JSON body")
	assert.EqualValues(t, 4, e.Stats().Failed, "nothing is silently dropped")
}

// TestQueueBoundHoldsWithSubmitsRacingForRoom: many callers submit at once
// into a small queue, most of them finding it full; every request is sent
// once and answered, and the queue never holds more than QueueSize
// requests, however the callers race for a freed place.
func TestQueueBoundHoldsWithSubmitsRacingForRoom(t *testing.T) {
	const queueSize, callers, each = 2, 16, 25
	var e *engine.Engine
	var maxQueued, calls atomic.Int64
	client := &http.Client{Transport: engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		calls.Add(1)
		q := e.Stats().Queued
		for m := maxQueued.Load(); q > m && !maxQueued.CompareAndSwap(m, q); m = maxQueued.Load() {
		}
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	})}
	e, err := engine.New(engine.Config{BaseURL: "http://api.test", HTTPClient: client, Workers: 2, QueueSize: queueSize})
	require.NoError(t, err)
	defer e.Close()

	ctx := ctxTimeout(t, 30*time.Second)
	errs := make(chan error, callers*each)
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i := range each {
				_, err := e.Do(ctx, requests.New("GET", "/x", requests.WithQuery("i", itoa(g*each+i))))
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.EqualValues(t, callers*each, calls.Load(), "every request sent once")
	assert.LessOrEqual(t, maxQueued.Load(), int64(queueSize), "the queue never held more than its bound")
	st := e.Stats()
	assert.EqualValues(t, callers*each, st.Completed)
	assert.Zero(t, st.Queued)
}
