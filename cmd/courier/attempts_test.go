package main

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFetchAttemptsCountEveryAttemptSent pins what "attempts" says: every
// attempt that reached the server, retries and replays after a refresh
// included. --max-attempts bounds the first attempt and its retries; a
// replay after a refresh does not count against it.
func TestFetchAttemptsCountEveryAttemptSent(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/auth/refresh":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"access_token":"a2","refresh_token":"r2"}`))
		case r.Header.Get("Authorization") == "Bearer a2":
			calls.Add(1)
			w.Write([]byte(`{"ok":true}`))
		case calls.Add(1) <= 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	r := courier(t, "/x\n", []string{"COURIER_TOKEN=a1", "COURIER_REFRESH_TOKEN=r1"}, "fetch", "--base-url", srv.URL,
		"--refresh-path", "/auth/refresh", "--max-attempts", "3")
	require.Equal(t, 0, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 1)
	assert.Equal(t, 200, out[0].Status)
	assert.EqualValues(t, 4, calls.Load())
	assert.Equal(t, 4, out[0].Attempts, "503, 503, 401, then the replay with the new token")
}

// TestFetchAttemptsOfAParkedRequestThatFails pins a bug: a request sent,
// answered 401 and parked while its token was refreshed said attempts 0
// when the refresh failed.
func TestFetchAttemptsOfAParkedRequestThatFails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized) // the refresh too: the session ends
	}))
	defer srv.Close()
	r := courier(t, "/x\n", []string{"COURIER_TOKEN=a1", "COURIER_REFRESH_TOKEN=r1"}, "fetch", "--base-url", srv.URL,
		"--refresh-path", "/auth/refresh")
	require.Equal(t, 3, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 1)
	require.NotNil(t, out[0].Error)
	assert.Contains(t, *out[0].Error, "session expired")
	assert.Equal(t, 1, out[0].Attempts, "the request was sent once")
}
