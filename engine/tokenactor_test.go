package engine_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// The token actor's interleavings, driven in a synctest bubble: the API is
// an in-process RoundTripper, so synctest.Wait returns exactly when every
// goroutine of the engine is blocked (on the gate of a refresh, say), and
// timeouts and expiries pass in virtual time.

// inproc is an http.RoundTripper that serves requests with a handler in the
// caller's goroutine, as a server would, without sockets.
type inproc struct{ h http.Handler }

func (t inproc) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

// tokenAPI is an API with one valid access token, a refresh endpoint that
// rotates both tokens, and an optional gate that holds every refresh call
// until the test opens it or the call is cancelled.
type tokenAPI struct {
	mu          sync.Mutex
	access      string        // the valid access token
	refresh     string        // the valid refresh token
	gen         int           // number in the last issued tokens
	expiresIn   string        // expires_in of refresh answers, JSON; "" for none
	gate        chan struct{} // if set, refreshes wait until it is closed
	refreshes   []string      // refresh tokens presented, in order
	sent        []string      // Authorization of every API request, in order
	hangRefresh int           // refresh calls past this many hang until cancelled; 0: never
	hold        chan struct{} // if set, API requests wait until it is closed
}

func newTokenAPI() *tokenAPI {
	return &tokenAPI{access: "access-1", refresh: "refresh-1", gen: 1}
}

func (a *tokenAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/refresh" {
		a.serveRefresh(w, r)
		return
	}
	a.mu.Lock()
	hold := a.hold
	a.mu.Unlock()
	if hold != nil {
		<-hold
	}
	a.mu.Lock()
	a.sent = append(a.sent, r.Header.Get("Authorization"))
	ok := r.Header.Get("Authorization") == "Bearer "+a.access
	a.mu.Unlock()
	if !ok {
		http.Error(w, "expired", http.StatusUnauthorized)
		return
	}
	w.Write([]byte(`{"ok":true}`))
}

func (a *tokenAPI) serveRefresh(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	_ = json.NewDecoder(r.Body).Decode(&body)
	a.mu.Lock()
	a.refreshes = append(a.refreshes, body["refresh_token"])
	gate, hang := a.gate, a.hangRefresh > 0 && len(a.refreshes) > a.hangRefresh
	a.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if body["refresh_token"] != a.refresh {
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	a.gen++
	a.access = "access-" + strconv.Itoa(a.gen)
	a.refresh = "refresh-" + strconv.Itoa(a.gen)
	answer := `{"access_token":"` + a.access + `","refresh_token":"` + a.refresh + `"`
	if a.expiresIn != "" {
		answer += `,"expires_in":` + a.expiresIn
	}
	w.Write([]byte(answer + "}"))
}

// set runs f with the API's lock held.
func (a *tokenAPI) set(f func(a *tokenAPI)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func (a *tokenAPI) refreshCalls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.refreshes)
}

// tokenConfig is an engine config for api, starting with access token
// "stale" (which api rejects) and refresh token "refresh-1".
func tokenConfig(api *tokenAPI) engine.Config {
	return engine.Config{
		BaseURL:    "http://api.test",
		HTTPClient: &http.Client{Transport: inproc{api}},
		Auth: engine.Auth{
			AccessToken:  "stale",
			RefreshToken: "refresh-1",
			Refresh:      &engine.RefreshConfig{Path: "/refresh"},
		},
		Retry: engine.Retry{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond},
	}
}

// startEngine starts an engine inside the bubble and closes it when the
// bubble's test ends.
func startEngine(t *testing.T, cfg engine.Config) *engine.Engine {
	t.Helper()
	e, err := engine.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, e.Close())
		require.Zero(t, engine.DoubleResolves(), "a future was resolved twice")
	})
	return e
}

// A refresh in flight when SetTokens replaced the tokens used to be
// forgotten: its result was discarded as outdated, and the 401 that the new
// (also rejected) token collected meanwhile was dropped because "a refresh
// is running". Nothing answered that demand, so every request hung.
func TestSetTokensDuringRefreshDoesNotStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		gate := make(chan struct{})
		api.set(func(a *tokenAPI) { a.gate = gate })
		e := startEngine(t, tokenConfig(api))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		f := e.Submit(ctx, requests.New("GET", "/x"))
		synctest.Wait() // parked on its 401; the refresh waits at the gate
		require.Equal(t, 1, api.refreshCalls())

		// The caller installs tokens the server rejects too, with the
		// refresh token the server still honours.
		e.SetTokens(engine.Tokens{AccessToken: "also-stale", RefreshToken: "refresh-1"})
		synctest.Wait() // replayed with "also-stale", rejected again
		close(gate)

		resp, err := f.Await(ctx)
		require.NoError(t, err, "the request must not hang until its deadline")
		assert.Equal(t, 200, resp.Status)
		later, err := e.Get(ctx, "/later")
		require.NoError(t, err, "new requests must not hang either")
		assert.Equal(t, 200, later.Status)
		api.set(func(a *tokenAPI) {
			assert.Equal(t, "refresh-1", a.refreshes[len(a.refreshes)-1], "the refresh that answered used the refresh token SetTokens gave")
		})
	})
}

// tokensSent returns the Authorization values the API has seen so far.
func (a *tokenAPI) tokensSent() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.sent...)
}

// The interleavings of a refresh in flight with SetTokens, TerminateSession
// and 401s on the old and the new generation: whatever the order, every
// request resolves, with the answer a user would expect.
func TestTokenActorInterleavings(t *testing.T) {
	t.Run("SetTokens with a good token while a refresh runs: its result is dropped", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			api := newTokenAPI()
			gate := make(chan struct{})
			api.set(func(a *tokenAPI) { a.gate = gate })
			var refreshed []engine.Tokens
			var mu sync.Mutex
			cfg := tokenConfig(api)
			cfg.Auth.OnTokenRefreshed = func(tk engine.Tokens) { mu.Lock(); refreshed = append(refreshed, tk); mu.Unlock() }
			e := startEngine(t, cfg)
			ctx := context.Background()

			f := e.Submit(ctx, requests.New("GET", "/x"))
			synctest.Wait()
			e.SetTokens(engine.Tokens{AccessToken: "access-1", RefreshToken: "refresh-1"})
			resp, err := f.Await(ctx)
			require.NoError(t, err)
			assert.Equal(t, 2, resp.Attempts)
			close(gate)
			synctest.Wait()

			_, err = e.Get(ctx, "/after")
			require.NoError(t, err, "the caller's token is still the one in use")
			assert.Equal(t, []string{"Bearer stale", "Bearer access-1", "Bearer access-1"}, api.tokensSent())
			assert.Zero(t, e.Stats().Refreshes, "the voided refresh published nothing")
			mu.Lock()
			assert.Empty(t, refreshed, "OnTokenRefreshed never saw the voided refresh")
			mu.Unlock()
		})
	})

	t.Run("TerminateSession while a refresh runs fails what waits; SetTokens starts over", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			api := newTokenAPI()
			gate := make(chan struct{})
			api.set(func(a *tokenAPI) { a.gate = gate })
			var expired int
			var mu sync.Mutex
			cfg := tokenConfig(api)
			cfg.Auth.OnSessionExpired = func() { mu.Lock(); expired++; mu.Unlock() }
			e := startEngine(t, cfg)
			ctx := context.Background()

			parked := e.Submit(ctx, requests.New("GET", "/parked"))
			synctest.Wait()
			held := e.Submit(ctx, requests.New("GET", "/held"))
			synctest.Wait()
			e.TerminateSession()
			for _, f := range []*engine.Future{parked, held} {
				_, err := f.Await(ctx)
				assert.ErrorIs(t, err, errors.ErrSessionExpired)
			}
			close(gate)
			synctest.Wait()
			_, err := e.Get(ctx, "/while-ended")
			assert.ErrorIs(t, err, errors.ErrSessionExpired)

			e.SetTokens(engine.Tokens{AccessToken: "also-stale", RefreshToken: "refresh-1"})
			resp, err := e.Get(ctx, "/new-session")
			require.NoError(t, err, "the new session refreshes its rejected token")
			assert.Equal(t, 200, resp.Status)
			mu.Lock()
			assert.Equal(t, 1, expired)
			mu.Unlock()
		})
	})

	t.Run("401s on the generation being refreshed share its refresh", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			api := newTokenAPI()
			gate, hold := make(chan struct{}), make(chan struct{})
			api.set(func(a *tokenAPI) { a.gate, a.hold = gate, hold })
			cfg := tokenConfig(api)
			cfg.Workers = 4
			e := startEngine(t, cfg)
			ctx := context.Background()

			// Four attempts in flight at once with the stale token.
			futures := submitItems(ctx, e, 4)
			synctest.Wait()
			api.set(func(a *tokenAPI) { a.hold = nil })
			close(hold)
			synctest.Wait() // all four rejected; one refresh at the gate
			require.Equal(t, 1, api.refreshCalls())
			close(gate)
			for _, f := range futures {
				resp, err := f.Await(ctx)
				require.NoError(t, err)
				assert.Equal(t, 2, resp.Attempts)
			}
			assert.Equal(t, 1, api.refreshCalls())
		})
	})

	t.Run("a 401 on the new generation after a refresh refreshes again", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			api := newTokenAPI()
			e := startEngine(t, tokenConfig(api))
			ctx := context.Background()
			_, err := e.Get(ctx, "/one")
			require.NoError(t, err)
			api.set(func(a *tokenAPI) { a.access = "revoked" })
			gate := make(chan struct{})
			api.set(func(a *tokenAPI) { a.gate = gate })
			f := e.Submit(ctx, requests.New("GET", "/two"))
			synctest.Wait()
			// A SetTokens with the token just revoked voids the refresh in
			// flight; the replay's 401 must still get a refresh.
			e.SetTokens(engine.Tokens{AccessToken: "access-2", RefreshToken: "refresh-2"})
			synctest.Wait()
			close(gate)
			resp, err := f.Await(ctx)
			require.NoError(t, err)
			assert.Equal(t, 200, resp.Status)
			api.set(func(a *tokenAPI) {
				assert.Equal(t, []string{"refresh-1", "refresh-2", "refresh-2"}, a.refreshes)
			})
		})
	})

	t.Run("SetTokens then TerminateSession while the voided refresh still runs", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			api := newTokenAPI()
			gate := make(chan struct{})
			api.set(func(a *tokenAPI) { a.gate = gate })
			e := startEngine(t, tokenConfig(api))
			ctx := context.Background()
			f := e.Submit(ctx, requests.New("GET", "/x"))
			synctest.Wait()
			e.SetTokens(engine.Tokens{AccessToken: "also-stale", RefreshToken: "refresh-1"})
			e.TerminateSession()
			_, err := f.Await(ctx)
			assert.ErrorIs(t, err, errors.ErrSessionExpired)
			close(gate)
			synctest.Wait()
			_, err = e.Get(ctx, "/y")
			assert.ErrorIs(t, err, errors.ErrSessionExpired)
			assert.Zero(t, e.Stats().Refreshes)
		})
	})
}

// A refresh answer with a tiny expires_in (0.000001 s) used to arm the
// proactive refresh for "now" after every refresh: tens of thousands of
// refresh calls a second. A generation is refreshed ahead of its expiry at
// most once, never sooner than a floor after the previous refresh, and a
// token born expired is refreshed before a request needs it, not in a loop.
func TestTinyExpiresInDoesNotRefreshInALoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		// A runaway loop hangs from the 1000th refresh on instead of
		// spinning the test forever.
		api.set(func(a *tokenAPI) { a.expiresIn = "0.000001"; a.hangRefresh = 1000 })
		e := startEngine(t, tokenConfig(api))
		ctx := context.Background()

		for i := range 100 { // ten seconds of steady traffic
			resp, err := e.Get(ctx, "/x", requests.WithQuery("i", itoa(i)))
			require.NoError(t, err, "request %d", i)
			require.Equal(t, 200, resp.Status)
			advance(100 * time.Millisecond)
		}
		calls := api.refreshCalls()
		assert.LessOrEqual(t, calls, 12, "at most one refresh per second of traffic, and the first")
		assert.GreaterOrEqual(t, calls, 2, "a token past its expiry is refreshed before it is sent")

		advance(time.Hour) // idle
		assert.Equal(t, calls, api.refreshCalls(), "an idle engine does not refresh dead tokens")
	})
}

// A token whose known expiry has passed used to be sent while the early
// refresh was still running, collecting a 401. Requests that would carry it
// wait for the refresh, as they do after a 401.
func TestExpiredTokenIsNotSentWhileTheEarlyRefreshRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		gate := make(chan struct{})
		api.set(func(a *tokenAPI) { a.gate = gate })
		cfg := tokenConfig(api)
		cfg.Auth.AccessToken = "access-1"
		cfg.Auth.Expiry = time.Now().Add(10 * time.Minute)
		cfg.Timeout = time.Hour // the refresh call outlives the expiry
		e := startEngine(t, cfg)
		ctx := context.Background()

		advance(10*time.Minute - 20*time.Second)
		require.Equal(t, 1, api.refreshCalls(), "the early refresh runs 30s ahead of the expiry")
		resp, err := e.Get(ctx, "/before-expiry")
		require.NoError(t, err, "until the expiry the token is good")
		assert.Equal(t, 200, resp.Status)

		advance(21 * time.Second) // past the expiry; the refresh still runs
		f := e.Submit(ctx, requests.New("GET", "/after-expiry"))
		synctest.Wait()
		assert.Equal(t, []string{"Bearer access-1"}, api.tokensSent(), "the expired token was sent")
		close(gate)
		resp, err = f.Await(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, resp.Attempts)
		assert.Equal(t, []string{"Bearer access-1", "Bearer access-2"}, api.tokensSent())
		assert.Equal(t, 1, api.refreshCalls())
	})
}

// A token already expired when the engine learns of it is refreshed before
// the next request, once, and never sent.
func TestPassedExpiryRefreshesBeforeTheNextRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		cfg := tokenConfig(api)
		cfg.Auth.AccessToken = "access-1"
		cfg.Auth.Expiry = time.Now().Add(-time.Second)
		e := startEngine(t, cfg)
		ctx := context.Background()

		advance(time.Hour)
		assert.Zero(t, api.refreshCalls(), "no request, no refresh")
		futures := submitItems(ctx, e, 5)
		for _, f := range futures {
			resp, err := f.Await(ctx)
			require.NoError(t, err)
			assert.Equal(t, 1, resp.Attempts)
		}
		assert.Equal(t, 1, api.refreshCalls())
		for _, tk := range api.tokensSent() {
			assert.Equal(t, "Bearer access-2", tk, "the expired token is never sent")
		}
	})
}
