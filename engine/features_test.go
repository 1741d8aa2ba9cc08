package engine_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

func echoServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestMiddlewarePanicFailsOnlyItsRequest(t *testing.T) {
	srv := echoServer(t)
	var logs bytes.Buffer
	logger := zerolog.New(&logs)
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Logger: &logger, Middleware: []engine.Middleware{
		func(next http.RoundTripper) http.RoundTripper {
			return engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
				if r.URL.Path == "/boom" {
					panic("middleware exploded")
				}
				r.Header.Set("X-Seen", "1")
				return next.RoundTrip(r)
			})
		},
	}})
	ctx := ctxTimeout(t, 5*time.Second)
	_, err := e.Get(ctx, "/boom")
	var pe *errors.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "middleware exploded", pe.Value)
	assert.Contains(t, logs.String(), "middleware exploded")

	resp, err := e.Get(ctx, "/fine")
	require.NoError(t, err, "the engine keeps running")
	assert.Equal(t, 200, resp.Status)
}

func TestResponseTooLarge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 2048))
	}))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL, MaxResponseBytes: 1024})
	_, err := e.Get(ctxTimeout(t, 5*time.Second), "/big")
	assert.ErrorIs(t, err, errors.ErrResponseTooLarge)
	var re *errors.RequestError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts, "too large is not retried")
}

func TestOutputStreamsTheBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("y"), 5000))
	}))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL, MaxResponseBytes: 100})
	var out bytes.Buffer
	resp, err := e.Get(ctxTimeout(t, 5*time.Second), "/file", requests.WithOutput(&out))
	require.NoError(t, err)
	assert.Nil(t, resp.Body)
	assert.Equal(t, 5000, out.Len(), "streaming is not bound by MaxResponseBytes")
}

func TestBodyIsSentAgainOnRetry(t *testing.T) {
	var bodies []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		n := len(bodies)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: fastRetry()})
	_, err := e.Put(ctxTimeout(t, 5*time.Second), "/doc", requests.WithJSON(map[string]string{"name": "x"}))
	require.NoError(t, err)
	assert.Equal(t, []string{`{"name":"x"}`, `{"name":"x"}`}, bodies)
}

func TestPathsJoinTheBaseURLAndQueriesMerge(t *testing.T) {
	srv := echoServer(t)
	e := newEngine(t, engine.Config{BaseURL: srv.URL + "/api/v1"})
	resp, err := e.Get(ctxTimeout(t, 5*time.Second), "/users?x=1", requests.WithQuery("y", "2"))
	require.NoError(t, err)
	assert.Equal(t, "/api/v1/users?x=1&y=2", resp.Header.Get("X-Path"))
}

func TestOnErrorSeesEachFailedFutureOnce(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(500)
	}))
	defer srv.Close()
	got := make(chan error, 10)
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: fastRetry(), OnError: func(_ *requests.Request, err error) { got <- err }})
	_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
	require.Error(t, err)
	require.NoError(t, e.Shutdown(ctxTimeout(t, 5*time.Second)))
	assert.EqualValues(t, 3, calls.Load())
	require.Len(t, got, 1, "once per future, not per attempt")
	var he *errors.HTTPError
	require.ErrorAs(t, <-got, &he)
	assert.Equal(t, 3, he.Attempts)
}

func TestLogsNeverCarryTokensOrQueries(t *testing.T) {
	srv := newAuthServer(t, nil)
	var logs bytes.Buffer
	logger := zerolog.New(&logs).Level(zerolog.DebugLevel)
	cfg := authConfig(srv)
	cfg.Logger = &logger
	e := newEngine(t, cfg)
	_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x", requests.WithQuery("api_key", "k-123"))
	require.NoError(t, err)
	require.NoError(t, e.Shutdown(ctxTimeout(t, 5*time.Second)))
	out := logs.String()
	assert.Contains(t, out, `"token_gen"`, "attempts are logged")
	for _, secret := range []string{"stale", "access-2", "refresh-1", "refresh-2", "k-123"} {
		assert.NotContains(t, out, secret)
	}
}

func TestStreamYieldsInSubmissionOrder(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Later requests answer sooner.
		n := len(r.URL.Query().Get("i"))
		time.Sleep(time.Duration(5-n) * time.Millisecond)
		w.Write([]byte(r.URL.Query().Get("i")))
	}))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Workers: 8})
	seq := func(yield func(*requests.Request) bool) {
		for i := range 200 {
			if !yield(requests.New("GET", "/x", requests.WithQuery("i", itoa(i)))) {
				return
			}
		}
	}
	var got []int
	for res := range e.Stream(context.Background(), seq, 16) {
		require.NoError(t, res.Err)
		assert.Equal(t, itoa(res.Index), string(res.Response.Body))
		got = append(got, res.Index)
	}
	want := make([]int, 200)
	for i := range want {
		want[i] = i
	}
	assert.Equal(t, want, got)

	// Breaking early cancels the rest and leaves nothing running.
	n := 0
	for range e.Stream(context.Background(), seq, 16) {
		n++
		if n == 3 {
			break
		}
	}
	assert.Equal(t, 3, n)
}

// TestStressEveryFutureResolvesOnce throws thousands of requests with random
// statuses, delays, 401s and cancellations at the engine.
func TestStressEveryFutureResolvesOnce(t *testing.T) {
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch rand.IntN(10) {
		case 0:
			w.WriteHeader(503)
		case 1:
			w.WriteHeader(500)
		case 2:
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		case 3:
			w.WriteHeader(404)
		}
		w.Write([]byte("ok"))
	})
	stopExpiring := make(chan struct{})
	var expirer sync.WaitGroup
	expirer.Add(1)
	go func() { // invalidate the token now and then: a 401 storm each time
		defer expirer.Done()
		tick := time.NewTicker(30 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopExpiring:
				return
			case <-tick.C:
				srv.expire()
			}
		}
	}()
	cfg := authConfig(srv)
	cfg.Workers = 16
	cfg.QueueSize = 64
	e := newEngine(t, cfg)

	const n = 4000
	futures := make([]*engine.Future, n)
	var cancels []context.CancelFunc
	for i := range futures {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		path := "/s/" + itoa(rand.IntN(50)) // some duplicates in flight
		method := []string{"GET", "GET", "POST", "PUT"}[rand.IntN(4)]
		futures[i] = e.Submit(ctx, requests.New(method, path))
		if rand.IntN(20) == 0 {
			cancel()
		}
	}
	ctx := ctxTimeout(t, 60*time.Second)
	var ok, failed int64
	kinds := map[string]int{}
	for i, f := range futures {
		select {
		case <-f.Done():
		case <-ctx.Done():
			t.Fatalf("future %d never resolved", i)
		}
		if _, err := f.Await(ctx); err != nil {
			kinds[kind(err)]++
			failed++
		} else {
			ok++
		}
	}
	close(stopExpiring)
	expirer.Wait()
	for _, c := range cancels {
		c()
	}
	st := e.Stats()
	assert.EqualValues(t, n, st.Submitted)
	assert.Equal(t, st.Submitted, st.Completed+st.Failed)
	assert.Equal(t, ok, st.Completed)
	assert.Equal(t, failed, st.Failed)
	assert.Zero(t, st.Queued)
	assert.Zero(t, st.InFlight)
	assert.Greater(t, st.Refreshes, int64(0))
	assert.Zero(t, engine.DoubleResolves())
	t.Logf("stress: %+v; failures: %v", st, kinds)
}

func kind(err error) string {
	var he *errors.HTTPError
	switch {
	case errors.As(err, &he):
		if he.Status == 401 {
			return "401/attempts=" + itoa(he.Attempts)
		}
		return itoa(he.Status)
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return err.Error()
	}
}

func TestPanicInBackoffFailsTheRequestNotTheEngine(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: engine.Retry{
		Backoff: func(int, time.Duration, time.Duration) time.Duration { panic("bad backoff") },
	}})
	ctx := ctxTimeout(t, 5*time.Second)
	_, err := e.Get(ctx, "/x")
	var pe *errors.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "Retry.Backoff", pe.Where)
	_, err = e.Get(ctx, "/y")
	assert.NoError(t, err, "the dispatcher survived")
}

// Regression: with a default window of four times the workers, courier demo
// took 20 s instead of 3: every request waiting out a Retry-After at the
// head of the window stalled the whole stream.
func TestStreamDoesNotStallBehindASlowHead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var done atomic.Int64
		e := virtualEngine(t, engine.Config{Workers: 4, HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path == "/slow" {
				select {
				case <-release:
				case <-r.Context().Done():
					return nil, r.Context().Err()
				}
			} else {
				done.Add(1)
			}
			return answer(r, 200, "ok"), nil
		})})
		defer close(release)
		reqs := func(yield func(*requests.Request) bool) {
			if !yield(requests.New("GET", "/slow")) {
				return
			}
			for i := range 200 {
				if !yield(requests.New("GET", "/fast", requests.WithQuery("i", itoa(i)))) {
					return
				}
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		consumed := make(chan struct{})
		go func() {
			defer close(consumed)
			for range e.Stream(ctx, reqs, 0) {
			}
		}()
		synctest.Wait()
		assert.EqualValues(t, 200, done.Load(), "the requests behind the slow head went out while it was held")
		cancel()
		<-consumed // the consumer and the stream's reader end with the test
	})
}
