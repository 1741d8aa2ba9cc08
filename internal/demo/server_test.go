package demo_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
)

func call(t *testing.T, h http.Handler, method, path, token, ctype, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAccessTokenExpiresAfterItsUses(t *testing.T) {
	s := demo.New(demo.Config{AccessUses: 2})
	tk := s.Login()
	for range 2 {
		assert.Equal(t, 200, call(t, s, "GET", "/items/1", tk.AccessToken, "", "").Code)
	}
	w := call(t, s, "GET", "/items/1", tk.AccessToken, "", "")
	assert.Equal(t, 401, w.Code)
	assert.Contains(t, w.Header().Get("WWW-Authenticate"), "invalid_token")
}

func TestReusedRefreshTokenRevokesTheSession(t *testing.T) {
	s := demo.New(demo.Config{})
	tk := s.Login()
	w := call(t, s, "POST", "/auth/refresh", "", "application/json", `{"refresh_token":"`+tk.RefreshToken+`"}`)
	require.Equal(t, 200, w.Code)
	var next demo.Tokens
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &next))
	assert.NotEqual(t, tk.RefreshToken, next.RefreshToken, "rotated")

	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}}.Encode()
	w = call(t, s, "POST", "/auth/refresh", "", "application/x-www-form-urlencoded", form)
	assert.Equal(t, 400, w.Code, "the old refresh token is refused")
	assert.Contains(t, w.Body.String(), "reused")
	assert.Equal(t, 401, call(t, s, "GET", "/items/1", next.AccessToken, "", "").Code, "the whole session is revoked")
	assert.EqualValues(t, 1, s.Stats().RefreshReuse)
}

func TestFlakyFailsOnlyItsFirstAttempt(t *testing.T) {
	s := demo.New(demo.Config{FlakyPercent: 100})
	tk := s.Login()
	first := call(t, s, "GET", "/flaky/9", tk.AccessToken, "", "")
	assert.Contains(t, []int{429, 503}, first.Code)
	assert.NotEmpty(t, first.Header().Get("Retry-After"))
	assert.Equal(t, 200, call(t, s, "GET", "/flaky/9", tk.AccessToken, "", "").Code)
}

func TestCreateWithIdempotencyKeyAppliesOnce(t *testing.T) {
	s := demo.New(demo.Config{})
	tk := s.Login()
	for range 3 {
		r := httptest.NewRequest("POST", "/items", strings.NewReader(`{"name":"x"}`))
		r.Header.Set("Authorization", "Bearer "+tk.AccessToken)
		r.Header.Set("Idempotency-Key", "k")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		assert.Equal(t, 201, w.Code)
	}
	assert.EqualValues(t, 1, s.Stats().Creates)
}

func TestTokenEndpointSpeaksOAuth2ToConfidentialClients(t *testing.T) {
	s := demo.New(demo.Config{AccessTTL: time.Minute})
	form := func(v url.Values, basic bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/oauth/token", strings.NewReader(v.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basic {
			r.SetBasicAuth("demo-client", "demo-secret")
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	w := form(url.Values{"grant_type": {"client_credentials"}, "scope": {"items:read"}}, true)
	require.Equal(t, 200, w.Code, w.Body.String())
	var tk demo.Tokens
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &tk))
	assert.NotEmpty(t, tk.AccessToken)
	assert.Empty(t, tk.RefreshToken, "client credentials get no refresh token")
	assert.Equal(t, 60, tk.ExpiresIn)
	assert.Equal(t, "items:read", tk.Scope)
	assert.Equal(t, 200, call(t, s, "GET", "/items/1", tk.AccessToken, "", "").Code)

	w = form(url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo-client"}, "client_secret": {"demo-secret"}}, false)
	assert.Equal(t, 200, w.Code, "credentials in the form work too")
	w = form(url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo-client"}, "client_secret": {"wrong"}}, false)
	assert.Equal(t, 401, w.Code)
	assert.Contains(t, w.Body.String(), "invalid_client")
	w = form(url.Values{"grant_type": {"password"}}, true)
	assert.Equal(t, 400, w.Code)

	login := s.Login()
	w = form(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {login.RefreshToken}}, true)
	require.Equal(t, 200, w.Code)
	w = form(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {login.RefreshToken}}, true)
	assert.Equal(t, 400, w.Code, "a rotated refresh token is refused")
	assert.EqualValues(t, 1, s.Stats().RefreshReuse)
	assert.EqualValues(t, 2, s.Stats().ClientGrants)
}
