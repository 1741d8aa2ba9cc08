package engine_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// TestHookPanicsAreCountedAndLogged pins that a panic in any hook is seen:
// counted in Stats.HookPanics and logged at error level, with the hook's
// name, to the configured logger, while the engine and the hooks after it
// go on.
func TestHookPanicsAreCountedAndLogged(t *testing.T) {
	api := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	})
	buf := &syncBuffer{}
	logger := zerolog.New(buf).Level(zerolog.ErrorLevel)
	cfg := authConfig(api)
	cfg.Logger = &logger
	cfg.OnError = func(*requests.Request, error) { panic("OnError exploded") }
	cfg.Auth.OnTokenRefreshed = func(engine.Tokens) { panic("OnTokenRefreshed exploded") }
	expired := make(chan struct{})
	cfg.Auth.OnSessionExpired = func() {
		close(expired)
		panic("OnSessionExpired exploded")
	}
	e := newEngine(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)

	_, err := e.Get(ctx, "/items") // a 401, a refresh, a replay
	require.NoError(t, err)
	_, err = e.Get(ctx, "/missing")
	require.Error(t, err)
	require.Eventually(t, func() bool { return e.Stats().HookPanics == 2 }, 5*time.Second, time.Millisecond,
		"the panics of OnTokenRefreshed and OnError are counted")

	resp, err := e.Get(ctx, "/items")
	require.NoError(t, err, "the engine goes on after its hooks panicked")
	assert.Equal(t, 200, resp.Status)

	e.TerminateSession()
	<-expired
	require.Eventually(t, func() bool { return e.Stats().HookPanics == 3 }, 5*time.Second, time.Millisecond,
		"the panic of OnSessionExpired is counted")

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "log line %q", l)
		if m["message"] == "panic in hook" {
			lines = append(lines, m)
		}
	}
	require.Len(t, lines, 3, "one error line per panic: %s", buf.String())
	for i, hook := range []string{"OnTokenRefreshed", "OnError", "OnSessionExpired"} {
		assert.Equal(t, "error", lines[i]["level"])
		assert.Equal(t, hook, lines[i]["hook"])
		assert.Equal(t, hook+" exploded", lines[i]["panic"])
	}
}
