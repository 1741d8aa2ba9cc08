package demo_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

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
