package engine_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// Tests whose subject is time run in a synctest bubble, against an
// in-process RoundTripper: the bubble's clock moves only when every
// goroutine in it is blocked, so a 30-second wait takes no real time and
// cannot flake on a loaded machine. Real sockets stay in the fault suite.

// answer is an in-process response.
func answer(r *http.Request, status int, body string, header ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: h, Request: r,
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
}

// inProcess is an HTTP client whose transport is fn, with no network.
func inProcess(fn func(*http.Request) (*http.Response, error)) *http.Client {
	return &http.Client{Transport: engine.RoundTripperFunc(fn)}
}

// virtualEngine starts an engine inside the current bubble; it is closed
// before the bubble ends.
func virtualEngine(t *testing.T, cfg engine.Config) *engine.Engine {
	t.Helper()
	if cfg.BaseURL == "" {
		cfg.BaseURL = "http://api.test"
	}
	e, err := engine.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	return e
}

func TestRetryAfterWaitsInVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		e := virtualEngine(t, engine.Config{HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
			if calls.Add(1) == 1 {
				return answer(r, 503, "busy", "Retry-After", "30"), nil
			}
			return answer(r, 200, "ok"), nil
		})})
		start := time.Now()
		resp, err := e.Get(context.Background(), "/x")
		require.NoError(t, err)
		assert.Equal(t, 2, resp.Attempts)
		assert.Equal(t, 30*time.Second, time.Since(start), "the retry went out when Retry-After said, not before or after")
	})
}

// TestRetryAfterBeyondDeadlineFailsAtOnce: a wait the caller's deadline
// cannot fit fails at once, with the Retry-After in the error.
func TestRetryAfterBeyondDeadlineFailsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		e := virtualEngine(t, engine.Config{HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
			calls.Add(1)
			return answer(r, 503, "busy", "Retry-After", "30"), nil
		})})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := e.Get(ctx, "/x")
		var he *errors.HTTPError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, 503, he.Status)
		assert.Equal(t, 30*time.Second, he.RetryAfter)
		assert.Contains(t, err.Error(), "does not fit the deadline")
		assert.Zero(t, time.Since(start), "failed at once, not at the deadline")
		assert.EqualValues(t, 1, calls.Load())
	})
}

// TestAttemptTimeoutEndsAHangingAttempt: the per-attempt timeout (one
// timer per worker, re-armed for each attempt) cancels an attempt whose
// server never answers, exactly when it is due, and says it timed out.
func TestAttemptTimeoutEndsAHangingAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := func(r *http.Request) (*http.Response, error) {
			<-r.Context().Done()
			return nil, r.Context().Err()
		}
		e := virtualEngine(t, engine.Config{HTTPClient: inProcess(hang), Timeout: 10 * time.Second,
			Retry: engine.Retry{MaxAttempts: 1}})
		start := time.Now()
		_, err := e.Get(context.Background(), "/x")
		var re *errors.RequestError
		require.ErrorAs(t, err, &re)
		assert.True(t, re.Timeout(), "the error says it timed out: %v", err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 10*time.Second, time.Since(start))

		// A request's own Timeout wins, attempt after attempt on one worker.
		for range 3 {
			start = time.Now()
			_, err = e.Do(context.Background(), requests.New("GET", "/y", requests.WithTimeout(time.Second)))
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Equal(t, time.Second, time.Since(start))
		}
	})
}

// TestAttemptTimeoutLeavesAFastAttemptAlone: an attempt that ends before
// its timeout is not cancelled later by that timeout's timer, whose worker
// has moved on to the next attempt.
func TestAttemptTimeoutLeavesAFastAttemptAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		e := virtualEngine(t, engine.Config{Workers: 1, Timeout: 10 * time.Second, HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
			if calls.Add(1) == 1 {
				time.Sleep(9 * time.Second) // just inside the first attempt's timeout
				return answer(r, 200, "first"), nil
			}
			// The second attempt starts 9s in; the first one's timer is
			// due at 10s. It must not end this one.
			select {
			case <-time.After(5 * time.Second):
				return answer(r, 200, "second"), nil
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
		})})
		_, err := e.Get(context.Background(), "/a")
		require.NoError(t, err)
		resp, err := e.Get(context.Background(), "/b")
		require.NoError(t, err)
		assert.Equal(t, "second", string(resp.Body))
	})
}

// TestBackpressure: Submit waits for room while the queue is full, until
// its ctx ends; TrySubmit fails at once.
func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int64
		e := virtualEngine(t, engine.Config{Workers: 1, QueueSize: 2, HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
			calls.Add(1)
			<-release
			return answer(r, 200, "ok"), nil
		})})
		ctx := context.Background()
		running := e.Submit(ctx, requests.New("GET", "/0"))
		synctest.Wait()
		require.EqualValues(t, 1, calls.Load(), "the first in flight")
		q1 := e.Submit(ctx, requests.New("GET", "/1"))
		q2 := e.Submit(ctx, requests.New("GET", "/2"))

		f, err := e.TrySubmit(ctx, requests.New("GET", "/3"))
		assert.ErrorIs(t, err, errors.ErrQueueFull)
		assert.Nil(t, f)

		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = e.Submit(short, requests.New("GET", "/4")).Await(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "Submit waits for room only until its ctx ends")
		assert.Equal(t, 20*time.Millisecond, time.Since(start))

		waiting := make(chan *engine.Future)
		go func() { waiting <- e.Submit(ctx, requests.New("GET", "/5")) }()
		advance(time.Hour)
		select {
		case <-waiting:
			t.Fatal("Submit returned while the queue was full")
		default:
		}
		close(release)
		late := <-waiting
		for _, f := range []*engine.Future{running, q1, q2, late} {
			_, err := f.Await(ctx)
			require.NoError(t, err)
		}
		st := e.Stats()
		assert.EqualValues(t, 5, st.Submitted, "the refused TrySubmit is not a submission")
		assert.EqualValues(t, 4, st.Completed)
		assert.EqualValues(t, 1, st.Failed)
	})
}

// refresherEngine runs an engine whose API accepts only the token
// "fresh-N" of the latest refresh (or "start" before any), with refresher
// as its Refresher.
func refresherEngine(t *testing.T, refresher engine.Refresher, extra func(*engine.Config)) (*engine.Engine, *atomic.Value) {
	var valid atomic.Value
	valid.Store("Bearer start")
	cfg := engine.Config{
		HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
			if r.Header.Get("Authorization") != valid.Load().(string) {
				return answer(r, 401, "expired"), nil
			}
			return answer(r, 200, "ok"), nil
		}),
		Auth: engine.Auth{AccessToken: "old", RefreshToken: "rt-1", Refresher: refresher},
	}
	if extra != nil {
		extra(&cfg)
	}
	return virtualEngine(t, cfg), &valid
}

func TestRefresherAnswerIsUsedAndPersisted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var given []string
		var valid *atomic.Value
		refreshed := make(chan engine.Tokens, 1)
		e, v := refresherEngine(t, func(ctx context.Context, rt string) (engine.Tokens, error) {
			given = append(given, rt)
			valid.Store("Bearer fresh-1")
			return engine.Tokens{AccessToken: "fresh-1", RefreshToken: "rt-2", ExpiresIn: time.Hour}, nil
		}, func(c *engine.Config) { c.Auth.OnTokenRefreshed = func(t engine.Tokens) { refreshed <- t } })
		valid = v

		resp, err := e.Get(context.Background(), "/me")
		require.NoError(t, err)
		assert.Equal(t, 2, resp.Attempts, "the 401, then the replay with the new token")
		assert.Equal(t, []string{"rt-1"}, given, "the Refresher got the refresh token, once")
		got := <-refreshed
		assert.Equal(t, "fresh-1", got.AccessToken)
		assert.Equal(t, "rt-2", got.RefreshToken)
		assert.Equal(t, time.Now().Add(time.Hour), got.Expiry, "OnTokenRefreshed gets the expiry worked out from ExpiresIn")
		assert.EqualValues(t, 1, e.Stats().Refreshes)
	})
}

func TestRefresherTransientErrorsAreRetriedThenFailTheWaitingRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		e, _ := refresherEngine(t, func(ctx context.Context, rt string) (engine.Tokens, error) {
			calls.Add(1)
			return engine.Tokens{}, fmt.Errorf("identity provider answered 503")
		}, nil)
		_, err := e.Get(context.Background(), "/me")
		assert.ErrorIs(t, err, errors.ErrRefreshFailed)
		assert.ErrorContains(t, err, "identity provider answered 503")
		assert.EqualValues(t, engine.DefaultRefreshAttempts, calls.Load(), "a transient failure is tried again")

		// The session goes on: the next request tries again.
		_, err = e.Get(context.Background(), "/me")
		assert.ErrorIs(t, err, errors.ErrRefreshFailed)
		assert.NotErrorIs(t, err, errors.ErrSessionExpired)
		assert.EqualValues(t, 2*engine.DefaultRefreshAttempts, calls.Load())
	})
}

func TestRefresherSessionExpiredEndsTheSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls, expired atomic.Int64
		e, _ := refresherEngine(t, func(ctx context.Context, rt string) (engine.Tokens, error) {
			calls.Add(1)
			return engine.Tokens{}, fmt.Errorf("refresh token revoked: %w", errors.ErrSessionExpired)
		}, func(c *engine.Config) { c.Auth.OnSessionExpired = func() { expired.Add(1) } })
		_, err := e.Get(context.Background(), "/me")
		assert.ErrorIs(t, err, errors.ErrSessionExpired)
		assert.ErrorContains(t, err, "refresh token revoked")
		assert.EqualValues(t, 1, calls.Load(), "the Refresher's own verdict is not retried")

		_, err = e.Get(context.Background(), "/me")
		assert.ErrorIs(t, err, errors.ErrSessionExpired, "new requests fail fast until SetTokens")
		assert.EqualValues(t, 1, calls.Load())
		synctest.Wait()
		assert.EqualValues(t, 1, expired.Load(), "OnSessionExpired ran once")
	})
}

func TestRefresherContextEndsWithTheTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		e, _ := refresherEngine(t, func(ctx context.Context, rt string) (engine.Tokens, error) {
			calls.Add(1)
			dl, ok := ctx.Deadline()
			assert.True(t, ok, "the Refresher's context has a deadline")
			assert.Equal(t, time.Now().Add(5*time.Second), dl)
			<-ctx.Done() // a refresh endpoint that never answers
			return engine.Tokens{}, ctx.Err()
		}, func(c *engine.Config) {
			c.Timeout = 5 * time.Second
			c.Retry = engine.Retry{BaseDelay: time.Second, MaxDelay: time.Second}
		})
		start := time.Now()
		_, err := e.Get(context.Background(), "/me")
		assert.ErrorIs(t, err, errors.ErrRefreshFailed)
		assert.EqualValues(t, engine.DefaultRefreshAttempts, calls.Load())
		took := time.Since(start)
		// Three attempts of 5s each, with at most 1s of backoff between.
		assert.GreaterOrEqual(t, took, time.Duration(engine.DefaultRefreshAttempts)*5*time.Second)
		assert.LessOrEqual(t, took, time.Duration(engine.DefaultRefreshAttempts)*6*time.Second)
	})
}

// TestBodyWithoutContentLengthFromACustomTransportIsRead pins a bug: an
// answer from a RoundTripper that left ContentLength at 0 on a body it did
// not measure (a middleware's, a test double's) came back with no body.
func TestBodyWithoutContentLengthFromACustomTransportIsRead(t *testing.T) {
	e := virtualEngine(t, engine.Config{HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
		resp := answer(r, 200, `{"ok":true}`)
		resp.ContentLength = 0
		if r.URL.Path == "/empty" {
			resp.Body = http.NoBody
		}
		return resp, nil
	})})
	resp, err := e.Get(context.Background(), "/x")
	require.NoError(t, err)
	assert.Equal(t, `{"ok":true}`, string(resp.Body))
	resp, err = e.Get(context.Background(), "/empty")
	require.NoError(t, err)
	assert.Empty(t, resp.Body)
}

// TestAnIdleEngineKeepsNoAnswer: once an engine has gone idle it holds no
// answer its caller has dropped. A worker that resolved its caller itself
// reports lazily, and the dispatcher takes such reports at its next
// wake-up; the last one of the jobs out wakes it, so an idle engine does
// not keep the call, its future and its answer until the next request.
func TestAnIdleEngineKeepsNoAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := virtualEngine(t, engine.Config{Workers: 2, HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
			return answer(r, 200, strings.Repeat("x", 64<<10)), nil
		})})
		resp, err := e.Do(context.Background(), requests.New("GET", "/big", requests.WithoutDedup()))
		require.NoError(t, err)
		held := weak.Make(resp)
		resp = nil
		synctest.Wait() // the engine is idle
		runtime.GC()
		assert.True(t, held.Value() == nil, "the idle engine still holds the answer")
	})
}
