package engine_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
)

// TestRefreshErrorCarriesTheOAuthErrorCode pins that a token endpoint's
// RFC 6749 section 5.2 answer reaches the caller: fosite's invalid_grant
// ("refresh token was already used") read only "refused with 400 Bad
// Request", and a wrong client secret looked like an expired session. The
// error is a *errors.RefreshError with the code and the description (the
// refresh token it quotes redacted), and still matches ErrSessionExpired
// or ErrRefreshFailed as before.
func TestRefreshErrorCarriesTheOAuthErrorCode(t *testing.T) {
	for _, tc := range []struct {
		name          string
		status        int
		body          string
		sentinel      error
		code, desc    string
		misconfigured bool
	}{
		{"invalid_grant", 400, `{"error":"invalid_grant","error_description":"The refresh token rt-secret-1 was already used."}`,
			errors.ErrSessionExpired, "invalid_grant", "The refresh token [redacted] was already used.", false},
		{"invalid_client", 401, `{"error":"invalid_client","error_description":"Client authentication failed (client secret s3cr3t-value wrong)."}`,
			errors.ErrSessionExpired, "invalid_client", "Client authentication failed (client secret [redacted] wrong).", true},
		{"temporarily_unavailable", 503, `{"error":"temporarily_unavailable"}`,
			errors.ErrRefreshFailed, "temporarily_unavailable", "", false},
		{"no JSON", 400, `<html>bad</html>`, errors.ErrSessionExpired, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/oauth/token" {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tc.status)
					w.Write([]byte(tc.body))
					return
				}
				w.WriteHeader(http.StatusUnauthorized)
			}))
			t.Cleanup(srv.Close)
			e := newEngine(t, engine.Config{
				BaseURL: srv.URL,
				Retry:   fastRetry(),
				Auth: engine.Auth{AccessToken: "old", RefreshToken: "rt-secret-1", Refresh: &engine.RefreshConfig{
					Path: "/oauth/token?tenant=private", Form: true, ClientID: "app", ClientSecret: "s3cr3t-value", MaxAttempts: 1,
				}},
			})
			_, err := e.Get(ctxTimeout(t, 10*time.Second), "/items")
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.sentinel)
			var re *errors.RefreshError
			require.True(t, errors.As(err, &re), "a *errors.RefreshError in %v", err)
			assert.Equal(t, tc.status, re.Status)
			assert.Equal(t, tc.code, re.Code)
			assert.Equal(t, tc.desc, re.Description)
			assert.Equal(t, tc.misconfigured, re.Misconfigured())
			assert.Equal(t, "POST", re.Method)
			assert.Equal(t, srv.URL+"/oauth/token", re.URL, "the URL tried, without its query")
			if tc.code != "" {
				assert.Contains(t, err.Error(), tc.code)
			}
			for _, secret := range []string{"rt-secret-1", "s3cr3t-value", "tenant=private"} {
				assert.NotContains(t, err.Error(), secret)
			}
		})
	}
}

// TestRefreshPathResolvesLikeRequestPaths pins that Refresh.Path resolves
// as request paths do: with BaseURL .../v1, requests went to /v1/users
// but the refresh to /auth/refresh at the root. A path joins the base
// URL's path; an absolute URL is taken as it is; an error names the URL
// tried, without its query.
func TestRefreshPathResolvesLikeRequestPaths(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		want       string // the refresh's path as the server sees it
	}{
		{"a path joins the base path", "/auth/refresh", "/v1/auth/refresh"},
		{"without a leading slash too", "auth/refresh", "/v1/auth/refresh"},
		{"an absolute URL is taken as it is", "{srv}/auth/refresh", "/auth/refresh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var refreshedAt, requestedAt []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				if r.Method == http.MethodPost {
					refreshedAt = append(refreshedAt, r.URL.Path)
					w.Header().Set("Content-Type", "application/json")
					w.Write([]byte(`{"access_token":"new","refresh_token":"r2"}`))
					return
				}
				requestedAt = append(requestedAt, r.URL.Path)
				if r.Header.Get("Authorization") != "Bearer new" {
					w.WriteHeader(http.StatusUnauthorized)
				}
			}))
			t.Cleanup(srv.Close)
			e := newEngine(t, engine.Config{
				BaseURL: srv.URL + "/v1",
				Retry:   fastRetry(),
				Auth: engine.Auth{AccessToken: "old", RefreshToken: "r1",
					Refresh: &engine.RefreshConfig{Path: strings.ReplaceAll(tc.path, "{srv}", srv.URL)}},
			})
			resp, err := e.Get(ctxTimeout(t, 10*time.Second), "/users")
			require.NoError(t, err)
			assert.Equal(t, 200, resp.Status)
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, []string{tc.want}, refreshedAt)
			assert.Equal(t, []string{"/v1/users", "/v1/users"}, requestedAt)
		})
	}

	t.Run("the error names the URL tried", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				w.Write([]byte(`not json`))
				return
			}
			w.WriteHeader(http.StatusUnauthorized)
		}))
		t.Cleanup(srv.Close)
		e := newEngine(t, engine.Config{
			BaseURL: srv.URL + "/v1",
			Retry:   fastRetry(),
			Auth:    engine.Auth{AccessToken: "old", RefreshToken: "r1", Refresh: &engine.RefreshConfig{Path: "/auth/refresh?key=hidden"}},
		})
		_, err := e.Get(ctxTimeout(t, 10*time.Second), "/users")
		require.ErrorIs(t, err, errors.ErrSessionExpired)
		assert.Contains(t, err.Error(), "POST "+srv.URL+"/v1/auth/refresh: token answer is not a JSON object")
		assert.NotContains(t, err.Error(), "hidden")
	})

	t.Run("a path that cannot resolve is a config error", func(t *testing.T) {
		_, err := engine.New(engine.Config{BaseURL: "http://127.0.0.1:1/v1",
			Auth: engine.Auth{Refresh: &engine.RefreshConfig{Path: "//other.example/token"}}})
		require.Error(t, err)
		assert.Contains(t, err.Error(), `Auth.Refresh.Path "//other.example/token": starts with //`)
	})
}
