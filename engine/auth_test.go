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

func TestRefreshStorm_OneRefreshForAThousandRequests(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]map[string]int{} // request id -> token -> times
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	})
	inner := srv.Config.Handler
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.URL.Query().Get("id"); id != "" {
			mu.Lock()
			if seen[id] == nil {
				seen[id] = map[string]int{}
			}
			seen[id][r.Header.Get("Authorization")]++
			mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	})
	cfg := authConfig(srv)
	cfg.Workers = 32
	e := newEngine(t, cfg)

	ctx := ctxTimeout(t, 20*time.Second)
	futures := submitItems(ctx, e, 1000)
	requireAllOK(t, ctx, futures)
	assert.EqualValues(t, 1, srv.refreshCalls.Load(), "refresh calls")
	assert.EqualValues(t, 1, e.Stats().Refreshes)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 1000)
	for id, byToken := range seen {
		assert.LessOrEqual(t, byToken["Bearer stale"], 1, "request %s sent with the stale token more than once", id)
		assert.Equal(t, 1, byToken["Bearer access-2"], "request %s with the new token", id)
	}
}

func TestStale401AfterRefreshIsReplayedWithoutSecondRefresh(t *testing.T) {
	slowEntered := make(chan struct{})
	releaseSlow := make(chan struct{})
	var slowCalls atomic.Int64
	srv := newAuthServer(t, nil)
	inner := srv.Config.Handler
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" && slowCalls.Add(1) == 1 {
			// First attempt: carries the stale token; answer 401 only
			// after another request has caused the refresh.
			close(slowEntered)
			<-releaseSlow
			http.Error(w, "expired", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	})
	e := newEngine(t, authConfig(srv))
	ctx := ctxTimeout(t, 10*time.Second)

	slow := e.Submit(ctx, requests.New("GET", "/slow"))
	<-slowEntered
	_, err := e.Get(ctx, "/fast")
	require.NoError(t, err)
	require.EqualValues(t, 1, srv.refreshCalls.Load())

	close(releaseSlow)
	resp, err := slow.Await(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, resp.Attempts)
	assert.EqualValues(t, 1, srv.refreshCalls.Load(), "the stale 401 must not cause a second refresh")
	assert.EqualValues(t, 2, slowCalls.Load())
}

func TestQueuedRequestsWaitForTheRefreshInsteadOfCollecting401s(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rejected, sent atomic.Int64
		srv := newVirtualAuthServer(nil)
		srv.refreshGate = make(chan struct{})
		inner := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/refresh" {
				sent.Add(1)
				if r.Header.Get("Authorization") == "Bearer stale" {
					rejected.Add(1)
				}
			}
			inner.ServeHTTP(w, r)
		})
		cfg := srv.virtualConfig()
		cfg.Workers = 1
		e := virtualEngine(t, cfg)
		ctx := context.Background()

		futures := submitItems(ctx, e, 20)
		synctest.Wait()
		require.EqualValues(t, 1, srv.refreshCalls.Load(), "the refresh call, held")
		// The worker is free, but every queued request would carry the token
		// the server has just rejected.
		assert.EqualValues(t, 1, sent.Load(), "requests sent with a token known to be rejected")
		close(srv.refreshGate)

		requireAllOK(t, ctx, futures)
		assert.EqualValues(t, 1, rejected.Load(), "401s")
		assert.EqualValues(t, 21, sent.Load(), "one rejected attempt and one per request")
		assert.EqualValues(t, 1, srv.refreshCalls.Load())
	})
}

func Test401AfterReplayIsReturnedNotLooped(t *testing.T) {
	var calls atomic.Int64
	srv := newAuthServer(t, nil)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refresh" {
			srv.serveRefresh(w, r)
			return
		}
		calls.Add(1)
		http.Error(w, "no", http.StatusUnauthorized) // rejects every token
	})
	e := newEngine(t, authConfig(srv))
	_, err := e.Get(ctxTimeout(t, 5*time.Second), "/always-401")
	var he *errors.HTTPError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, 401, he.Status)
	assert.EqualValues(t, 2, srv.refreshCalls.Load(), "bounded: no refresh loop")
	assert.EqualValues(t, 3, calls.Load(), "one attempt and at most two replays")
}

func TestRefreshRefusedExpiresSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hangEntered := make(chan string, 2)
		var flakyCalls atomic.Int64
		srv := newVirtualAuthServer(nil)
		srv.refreshGate = make(chan struct{})
		srv.refreshStatus = func(int64) int { return http.StatusBadRequest }
		inner := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/hang1", "/hang2":
				hangEntered <- r.URL.Path
				<-r.Context().Done()
				return
			case "/flaky":
				flakyCalls.Add(1)
				w.Header().Set("Retry-After", "5")
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			case "/need-auth":
				http.Error(w, "expired", http.StatusUnauthorized)
				return
			}
			inner.ServeHTTP(w, r)
		})
		var expiredCalls atomic.Int64
		cfg := srv.virtualConfig()
		cfg.Workers = 3
		cfg.Auth.AccessToken = "access-1"
		cfg.Auth.OnSessionExpired = func() { expiredCalls.Add(1) }
		// /flaky's Retry-After would hold the whole host, /need-auth included.
		cfg.RateLimit.Adaptive.Disabled = true
		var onError atomic.Int64
		cfg.OnError = func(*requests.Request, error) { onError.Add(1) }
		e := virtualEngine(t, cfg)
		ctx := context.Background()

		// Time stands still until the test waits on a future: one request
		// of each kind is pending when the refresh is refused.
		var futures []*engine.Future
		futures = append(futures, e.Submit(ctx, requests.New("GET", "/hang1")))
		assert.Equal(t, "/hang1", <-hangEntered)
		futures = append(futures, e.Submit(ctx, requests.New("GET", "/hang2")))
		assert.Equal(t, "/hang2", <-hangEntered)
		futures = append(futures, e.Submit(ctx, requests.New("GET", "/flaky")))
		synctest.Wait()
		require.EqualValues(t, 1, flakyCalls.Load(), "the 503 is backing off")
		futures = append(futures, e.Submit(ctx, requests.New("GET", "/need-auth")))
		synctest.Wait()
		require.EqualValues(t, 1, srv.refreshCalls.Load(), "the refresh call, held")
		// A worker is free, but these wait for the refresh.
		for _, p := range []string{"/q1", "/q2", "/q3"} {
			futures = append(futures, e.Submit(ctx, requests.New("GET", p)))
		}
		synctest.Wait()
		require.EqualValues(t, 3, e.Stats().Queued, "three queued")
		for i, f := range futures {
			select {
			case <-f.Done():
				t.Fatalf("future %d resolved before the refresh answered", i)
			default:
			}
		}

		close(srv.refreshGate) // the refresh now answers 400
		for i, f := range futures {
			_, err := f.Await(ctx)
			assert.ErrorIs(t, err, errors.ErrSessionExpired, "future %d", i)
		}
		synctest.Wait()
		assert.EqualValues(t, 1, expiredCalls.Load(), "OnSessionExpired")
		assert.EqualValues(t, 7, onError.Load(), "OnError for each")
		assert.EqualValues(t, 1, flakyCalls.Load(), "the backing-off request was not sent again")

		_, err := e.Get(ctx, "/after")
		assert.ErrorIs(t, err, errors.ErrSessionExpired, "submissions fail fast while expired")
		assert.EqualValues(t, 1, expiredCalls.Load())

		e.SetTokens(engine.Tokens{AccessToken: "access-1", RefreshToken: "refresh-1"})
		resp, err := e.Get(ctx, "/after")
		require.NoError(t, err)
		assert.Equal(t, 200, resp.Status)
	})
}

func TestRefreshTransientFailureRecovers(t *testing.T) {
	srv := newAuthServer(t, nil)
	srv.refreshStatus = func(n int64) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	e := newEngine(t, authConfig(srv))
	ctx := ctxTimeout(t, 5*time.Second)
	futures := make([]*engine.Future, 20)
	for i := range futures {
		futures[i] = e.Submit(ctx, requests.New("GET", "/r", requests.WithQuery("i", itoa(i))))
	}
	for _, f := range futures {
		_, err := f.Await(ctx)
		require.NoError(t, err)
	}
	assert.EqualValues(t, 2, srv.refreshCalls.Load(), "one failed call and one that worked")
}

func TestRefreshKeepsFailingGivesErrRefreshFailedButKeepsSession(t *testing.T) {
	srv := newAuthServer(t, nil)
	srv.refreshStatus = func(n int64) int { return http.StatusBadGateway }
	var expired atomic.Int64
	cfg := authConfig(srv)
	cfg.Auth.OnSessionExpired = func() { expired.Add(1) }
	e := newEngine(t, cfg)
	ctx := ctxTimeout(t, 5*time.Second)
	_, err := e.Get(ctx, "/x")
	require.ErrorIs(t, err, errors.ErrRefreshFailed)
	assert.NotErrorIs(t, err, errors.ErrSessionExpired)
	assert.EqualValues(t, engine.DefaultRefreshAttempts, srv.refreshCalls.Load())

	srv.refreshStatus = nil
	resp, err := e.Get(ctx, "/x")
	require.NoError(t, err, "the session goes on and the next 401 refreshes again")
	assert.Equal(t, 200, resp.Status)
	assert.Zero(t, expired.Load())
}

func TestRotatedRefreshTokenIsNeverSentAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newVirtualAuthServer(nil)
		var persisted []engine.Tokens
		var mu sync.Mutex
		cfg := srv.virtualConfig()
		cfg.Auth.OnTokenRefreshed = func(tk engine.Tokens) { mu.Lock(); persisted = append(persisted, tk); mu.Unlock() }
		e := virtualEngine(t, cfg)
		ctx := context.Background()
		for range 3 {
			_, err := e.Get(ctx, "/x", requests.WithoutDedup())
			require.NoError(t, err)
			srv.expire()
		}
		srv.mu.Lock()
		assert.Equal(t, []string{"refresh-1", "refresh-2", "refresh-3"}, srv.seenRefresh)
		srv.mu.Unlock()
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, persisted, 3, "OnTokenRefreshed for each refresh")
		assert.Equal(t, "refresh-4", persisted[2].RefreshToken)
		assert.Equal(t, "access-4", persisted[2].AccessToken)
	})
}

func TestOAuthFormRefreshWithBasicClientAuth(t *testing.T) {
	got := make(chan *http.Request, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			require.NoError(t, r.ParseForm())
			got <- r
			w.Write([]byte(`{"access_token":"new","expires_in":-5}`))
			return
		}
		if r.Header.Get("Authorization") != "Bearer new" {
			w.WriteHeader(401)
			return
		}
		w.WriteHeader(204)
	}))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Auth: engine.Auth{
		AccessToken: "old", RefreshToken: "rt-1",
		Refresh: &engine.RefreshConfig{Path: "/token", Form: true, ClientID: "app id", ClientSecret: "s3cr:t",
			Body: map[string]any{"scope": "read"}},
	}})
	resp, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
	require.NoError(t, err)
	assert.Equal(t, 204, resp.Status)
	r := <-got
	assert.Equal(t, "refresh_token", r.PostForm.Get("grant_type"))
	assert.Equal(t, "rt-1", r.PostForm.Get("refresh_token"))
	assert.Equal(t, "read", r.PostForm.Get("scope"))
	assert.Empty(t, r.PostForm.Get("client_secret"), "basic client auth keeps the secret out of the form")
	id, secret, ok := r.BasicAuth()
	require.True(t, ok)
	assert.Equal(t, "app+id", id)
	assert.Equal(t, "s3cr%3At", secret)
}

func TestNoAuthorizationOnRedirectToAnotherOrigin(t *testing.T) {
	other := make(chan string, 1)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		other <- r.Header.Get("Authorization")
	}))
	defer elsewhere.Close()
	same := make(chan string, 1)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			// Same host, another port: another origin, though net/http
			// alone would forward the header.
			http.Redirect(w, r, elsewhere.URL+"/land", http.StatusFound)
		case "/home":
			http.Redirect(w, r, "/land", http.StatusFound)
		case "/land":
			same <- r.Header.Get("Authorization")
		}
	}))
	defer api.Close()
	e := newEngine(t, engine.Config{BaseURL: api.URL, Auth: engine.Auth{AccessToken: "secret-token"}})
	ctx := ctxTimeout(t, 5*time.Second)

	_, err := e.Get(ctx, "/away")
	require.NoError(t, err)
	assert.Empty(t, <-other, "the token must not reach another origin")

	_, err = e.Get(ctx, "/home")
	require.NoError(t, err)
	assert.Equal(t, "Bearer secret-token", <-same, "a same-origin redirect keeps the token")

	_, err = e.Get(ctx, elsewhere.URL+"/direct")
	require.NoError(t, err)
	assert.Empty(t, <-other, "an absolute URL to another origin gets no token")
}

func TestProactiveRefreshBeforeKnownExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newVirtualAuthServer(nil)
		cfg := srv.virtualConfig()
		cfg.Auth.AccessToken = "access-1"
		cfg.Auth.Expiry = time.Now().Add(10 * time.Minute)
		e := virtualEngine(t, cfg)
		advance(10*time.Minute - 30*time.Second - time.Nanosecond)
		require.Zero(t, srv.refreshCalls.Load(), "no refresh before 30s ahead of the expiry")
		advance(time.Nanosecond)
		require.EqualValues(t, 1, e.Stats().Refreshes, "the proactive refresh, 30s ahead of the expiry")
		srv.mu.Lock()
		srv.access = "access-2" // the old token is dead now; only the new one works
		srv.mu.Unlock()
		var unauthorized atomic.Int64
		inner := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer access-2" {
				unauthorized.Add(1)
			}
			inner.ServeHTTP(w, r)
		})
		_, err := e.Get(context.Background(), "/x")
		require.NoError(t, err)
		assert.Zero(t, unauthorized.Load(), "the request went out with the refreshed token")
		assert.EqualValues(t, 1, srv.refreshCalls.Load())
	})
}

func TestTerminateSessionCancelsAndPauses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered := make(chan struct{})
		api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hang" {
				close(entered)
				<-r.Context().Done()
				return
			}
			w.Write([]byte("ok"))
		})
		var expired atomic.Int64
		e := virtualEngine(t, engine.Config{HTTPClient: &http.Client{Transport: inproc{api}},
			Auth: engine.Auth{AccessToken: "t", OnSessionExpired: func() { expired.Add(1) }}})
		ctx := context.Background()
		f := e.Submit(ctx, requests.New("GET", "/hang"))
		<-entered
		e.TerminateSession()
		select {
		case <-f.Done():
		default:
			t.Fatal("TerminateSession returned before the pending request failed")
		}
		_, err := f.Await(ctx)
		assert.ErrorIs(t, err, errors.ErrSessionExpired)
		_, err = e.Get(ctx, "/x")
		assert.ErrorIs(t, err, errors.ErrSessionExpired)
		f, err = e.TrySubmit(ctx, requests.New("GET", "/x"))
		assert.ErrorIs(t, err, errors.ErrSessionExpired, "TrySubmit fails at once too")
		assert.Nil(t, f)
		e.SetTokens(engine.Tokens{AccessToken: "t2"})
		_, err = e.Get(ctx, "/x")
		assert.NoError(t, err)
		synctest.Wait()
		assert.EqualValues(t, 1, expired.Load(), "OnSessionExpired ran once")
	})
}
