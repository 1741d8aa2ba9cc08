package engine_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/internal/fakeclock"
	"github.com/courier-go/courier/requests"
)

// newEngine starts an engine for the test and closes it afterwards, checking
// that no future was ever resolved twice.
func newEngine(t *testing.T, cfg engine.Config) *engine.Engine {
	t.Helper()
	e, err := engine.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, e.Close())
		require.Zero(t, engine.DoubleResolves(), "a future was resolved twice")
	})
	return e
}

// fastRetry is a retry config for tests on the real clock: waits of a few
// milliseconds at most.
func fastRetry() engine.Retry {
	return engine.Retry{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}
}

// authServer is an API whose valid access token changes at every refresh,
// with a refresh endpoint that rotates refresh tokens.
type authServer struct {
	*httptest.Server
	mu            sync.Mutex
	access        string   // the one valid access token
	refresh       string   // the one valid refresh token
	seenRefresh   []string // refresh tokens presented, in order
	refreshCalls  atomic.Int64
	refreshStatus func(n int64) int // status to answer the nth refresh (1-based); nil: 200
	refreshGate   chan struct{}     // if set, each refresh waits for a value or for it to close
	gen           int
	api           http.HandlerFunc // called for non-refresh paths after auth passed
}

func newAuthServer(t *testing.T, api http.HandlerFunc) *authServer {
	s := &authServer{access: "access-1", refresh: "refresh-1", gen: 1, api: api}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// newVirtualAuthServer is newAuthServer for a synctest bubble: the same
// API at http://api.test, behind no listener. Its Config.Handler may be
// wrapped as an httptest server's can; an engine reaches it through
// virtualConfig. It must not be closed.
func newVirtualAuthServer(api http.HandlerFunc) *authServer {
	s := &authServer{access: "access-1", refresh: "refresh-1", gen: 1, api: api}
	s.Server = &httptest.Server{URL: "http://api.test", Config: &http.Server{Handler: http.HandlerFunc(s.serve)}}
	return s
}

// virtualConfig is authConfig for a server made by newVirtualAuthServer:
// every attempt and every refresh is served in process.
func (s *authServer) virtualConfig() engine.Config {
	cfg := authConfig(s)
	cfg.HTTPClient = &http.Client{Transport: inproc{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Config.Handler.ServeHTTP(w, r)
	})}}
	return cfg
}

func (s *authServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/refresh" {
		s.serveRefresh(w, r)
		return
	}
	s.mu.Lock()
	ok := r.Header.Get("Authorization") == "Bearer "+s.access
	s.mu.Unlock()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "expired", http.StatusUnauthorized)
		return
	}
	if s.api != nil {
		s.api(w, r)
		return
	}
	w.Write([]byte(`{"ok":true}`))
}

func (s *authServer) serveRefresh(w http.ResponseWriter, r *http.Request) {
	n := s.refreshCalls.Add(1)
	if s.refreshGate != nil {
		select {
		case <-s.refreshGate:
		case <-r.Context().Done():
			return
		}
	}
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	rt, _ := body["refresh_token"].(string)
	if rt == "" {
		_ = r.ParseForm()
		rt = r.PostForm.Get("refresh_token")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seenRefresh = append(s.seenRefresh, rt)
	if s.refreshStatus != nil {
		if st := s.refreshStatus(n); st != http.StatusOK {
			http.Error(w, `{"error":"nope"}`, st)
			return
		}
	}
	if rt != s.refresh {
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	s.gen++
	s.access = "access-" + strconv.Itoa(s.gen)
	s.refresh = "refresh-" + strconv.Itoa(s.gen)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": s.access, "refresh_token": s.refresh, "token_type": "Bearer", "expires_in": 3600,
	})
}

// expire makes the current access token invalid without issuing a new one.
func (s *authServer) expire() {
	s.mu.Lock()
	s.access = "revoked-" + s.access
	s.mu.Unlock()
}

// authConfig is an engine config for s with the initial tokens and the
// JSON refresh endpoint.
func authConfig(s *authServer) engine.Config {
	return engine.Config{
		BaseURL: s.URL,
		Auth: engine.Auth{
			AccessToken:  "stale",
			RefreshToken: "refresh-1",
			Refresh:      &engine.RefreshConfig{Path: "/refresh", Body: map[string]any{"from_source": 1}},
		},
		Retry: fastRetry(),
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func itoa(i int) string { return strconv.Itoa(i) }

func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

// newDemoAPI serves the demo API for the test.
func newDemoAPI(t *testing.T) *demoAPI {
	api := demo.New(demo.Config{})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &demoAPI{Server: api, URL: srv.URL}
}

type demoAPI struct {
	*demo.Server
	URL string
}

// submitItems submits n GETs of /items, each with its own id.
func submitItems(ctx context.Context, e *engine.Engine, n int) []*engine.Future {
	futures := make([]*engine.Future, n)
	for i := range futures {
		futures[i] = e.Submit(ctx, requests.New("GET", "/items", requests.WithQuery("id", itoa(i))))
	}
	return futures
}

// requireAllOK awaits every future and requires a 200 from each.
func requireAllOK(t *testing.T, ctx context.Context, futures []*engine.Future) {
	t.Helper()
	for i, f := range futures {
		resp, err := f.Await(ctx)
		require.NoError(t, err, "request %d", i)
		require.Equal(t, 200, resp.Status, "request %d", i)
	}
}

// advance lets d of the bubble's virtual time pass, then waits until every
// goroutine in the bubble is blocked again: inside synctest.Test the clock
// jumps as soon as everything is blocked, so no real time passes.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}
