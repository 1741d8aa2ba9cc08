package engine_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// firstSeen records the Authorization header of every API request, in
// the order the server saw them, and grants tokens at /token.
type firstSeen struct {
	mu   sync.Mutex
	auth []string
}

func (s *firstSeen) serve(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/token" {
		return answer(r, 200, `{"access_token":"granted","expires_in":3600}`, "Content-Type", "application/json"), nil
	}
	s.mu.Lock()
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer granted" {
		return answer(r, 403, "anonymous"), nil // as an API that refuses strangers
	}
	return answer(r, 200, `{"ok":true}`), nil
}

func (s *firstSeen) first() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.auth) == 0 {
		return "(none)"
	}
	return s.auth[0]
}

type grantSource struct{}

func (grantSource) Token() (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: "granted", Expiry: time.Now().Add(time.Hour)}, nil
}

// With the client-credentials grant or a TokenSource and no access token
// yet, the first request used to go out without Authorization, racing the
// token actor's start: an API that answers 403 to anonymous calls failed
// it. Now the engine starts knowing it has no token to send, and the first
// request waits for the grant.
func TestFirstRequestCarriesTheGrantedToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		auth engine.Auth
	}{
		{"client credentials", engine.Auth{Refresh: &engine.RefreshConfig{
			Path: "/token", Grant: engine.GrantClientCredentials, ClientID: "id", ClientSecret: "secret"}}},
		{"token source", engine.Auth{TokenSource: grantSource{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each round is a new engine whose first call is made as soon
			// as New returns: the race lost every time before the fix.
			for round := range 20 {
				srv := &firstSeen{}
				e, err := engine.New(engine.Config{BaseURL: "http://api.test", HTTPClient: inProcess(srv.serve), Auth: tc.auth})
				require.NoError(t, err)
				resp, err := e.Get(ctxTimeout(t, 10*time.Second), "/x")
				require.NoError(t, e.Close())
				require.NoError(t, err, "round %d", round)
				assert.Equal(t, 200, resp.Status)
				require.Equal(t, "Bearer granted", srv.first(), "round %d: the first request the server saw", round)
			}
		})
	}
}

// A token whose known expiry had already passed was sent, and collected
// a 401, when it came at the start (Auth.Expiry, a store's value) or
// through SetTokens: the stale mark was told after requests could already
// go out. Now it is refreshed before use; the server never sees it.
func TestAnExpiredTokenIsNeverSent(t *testing.T) {
	expiredStart := func(t *testing.T, cfg *engine.Config) {
		cfg.Auth.AccessToken, cfg.Auth.Expiry = "expired-1", time.Now().Add(-time.Minute)
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, cfg *engine.Config)
		then  func(e *engine.Engine) // before the requests
	}{
		{"Auth.Expiry", expiredStart, nil},
		{"a store's expiry", func(t *testing.T, cfg *engine.Config) {
			store, err := engine.NewFileStore(filepath.Join(t.TempDir(), "tokens.json"))
			require.NoError(t, err)
			_, _, err = store.CompareAndSwap(context.Background(), 0, engine.Tokens{
				AccessToken: "expired-1", RefreshToken: "refresh-1", Expiry: time.Now().Add(-time.Minute)})
			require.NoError(t, err)
			cfg.Auth = engine.Auth{Store: store, Refresh: cfg.Auth.Refresh}
		}, nil},
		{"a token file's expires_at", func(t *testing.T, cfg *engine.Config) {
			path := filepath.Join(t.TempDir(), "tokens.json")
			exp := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
			require.NoError(t, os.WriteFile(path, []byte(`{"access_token":"expired-1","refresh_token":"refresh-1","expires_at":"`+exp+`"}`), 0o600))
			store, err := engine.NewFileStore(path)
			require.NoError(t, err)
			cfg.Auth = engine.Auth{Store: store, Refresh: cfg.Auth.Refresh}
		}, nil},
		{"SetTokens", func(t *testing.T, cfg *engine.Config) {
			cfg.Auth.AccessToken = "access-1" // valid until SetTokens
		}, func(e *engine.Engine) {
			e.SetTokens(engine.Tokens{AccessToken: "expired-1", RefreshToken: "refresh-1", Expiry: time.Now().Add(-time.Minute)})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				api := newTokenAPI()
				api.set(func(a *tokenAPI) { a.access = "expired-1" }) // the server would even take it
				cfg := tokenConfig(api)
				tc.setup(t, &cfg)
				e := startEngine(t, cfg)
				if tc.then != nil {
					tc.then(e)
				}
				ctx := context.Background()
				f := e.Submit(ctx, requests.New("GET", "/x"))
				requireAllOK(t, ctx, append(submitItems(ctx, e, 4), f))
				api.set(func(a *tokenAPI) {
					assert.NotContains(t, a.sent, "Bearer expired-1", "the expired token never went out")
					assert.Equal(t, []string{"refresh-1"}, a.refreshes, "one refresh, before the first request")
				})
			})
		})
	}
}
