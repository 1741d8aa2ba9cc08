package main

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// With --grant client_credentials the first request used to leave before
// the token did: an API that refuses anonymous calls failed it. The first
// request the server sees now carries the granted token.
func TestFetchClientCredentialsFirstRequestCarriesTheToken(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth/token" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"access_token":"granted","expires_in":3600}`))
			return
		}
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer granted" {
			http.Error(w, "who are you", http.StatusForbidden)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	env := []string{"COURIER_CLIENT_ID=id", "COURIER_CLIENT_SECRET=secret"}
	r := courier(t, "/a\n/b\n/c\n", env, "fetch", "--base-url", srv.URL, "--summary=false",
		"--grant", "client_credentials", "--token-url", "/oauth/token")
	assert.Equal(t, 0, r.code, r.stderr)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, seen)
	assert.Equal(t, "Bearer granted", seen[0], "the first request the server saw")
	assert.NotContains(t, seen, "", "no request went out without the token")
}
