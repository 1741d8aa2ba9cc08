package engine_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
)

// Config.Headers and the refresh's Headers and Body used to stay the
// caller's maps after New: changing them afterwards changed what the
// engine sent, and raced with its workers, though Config says New copies
// what it needs.
func TestChangingConfigMapsAfterNewChangesNothing(t *testing.T) {
	type seen struct {
		header string
		body   map[string]any
	}
	refreshed := make(chan seen, 1)
	api := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			var body map[string]any
			_ = json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body)
			refreshed <- seen{r.Header.Get("X-Refresh"), body}
			_, _ = io.WriteString(w, `{"access_token":"new"}`)
			return
		}
		api <- r.Header.Get("X-Client")
		if r.Header.Get("Authorization") != "Bearer new" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()

	headers := http.Header{"X-Client": {"courier"}}
	rc := &engine.RefreshConfig{Path: "/token", Headers: http.Header{"X-Refresh": {"yes"}}, Body: map[string]any{"client": "courier"}}
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Headers: headers,
		Auth: engine.Auth{AccessToken: "old", RefreshToken: "r", Refresh: rc}})
	headers.Set("X-Client", "changed")
	rc.Headers.Set("X-Refresh", "changed")
	rc.Body["client"] = "changed"

	resp, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
	require.NoError(t, err)
	assert.Equal(t, 200, resp.Status)
	assert.Equal(t, "courier", <-api, "Config.Headers as they were at New")
	assert.Equal(t, "courier", <-api, "and on the replay")
	got := <-refreshed
	assert.Equal(t, "yes", got.header, "RefreshConfig.Headers as they were at New")
	assert.Equal(t, "courier", got.body["client"], "RefreshConfig.Body as it was at New")
	assert.Equal(t, "r", got.body["refresh_token"])
}
