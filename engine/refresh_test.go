package engine_test

import (
	"net/http"
	"net/http/httptest"
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
