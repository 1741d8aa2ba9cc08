package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// slogRecords is a slog.Handler that keeps every record it is given.
type slogRecords struct {
	level slog.Level
	mu    *sync.Mutex
	recs  *[]slog.Record
}

func newSlogRecords(level slog.Level) slogRecords {
	return slogRecords{level: level, mu: &sync.Mutex{}, recs: &[]slog.Record{}}
}

func (h slogRecords) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h slogRecords) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h slogRecords) WithGroup(string) slog.Handler                { return h }
func (h slogRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, r.Clone())
	return nil
}

func (h slogRecords) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(*h.recs)
}

// events is each record as "level message key,key,...", the keys sorted
// and the events too.
func (h slogRecords) events() []string {
	var out []string
	for _, r := range h.records() {
		var keys []string
		r.Attrs(func(a slog.Attr) bool { keys = append(keys, a.Key); return true })
		sort.Strings(keys)
		out = append(out, fmt.Sprintf("%s %s %s", strings.ToLower(r.Level.String()), r.Message, strings.Join(keys, ",")))
	}
	sort.Strings(out)
	return out
}

// zerologEvents is events for the lines a zerolog logger wrote.
func zerologEvents(t *testing.T, out string) []string {
	var evs []string
	for line := range strings.Lines(out) {
		var ev map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &ev), line)
		level, msg := ev["level"], ev["message"]
		delete(ev, "level")
		delete(ev, "message")
		keys := slices.Sorted(maps.Keys(ev))
		evs = append(evs, fmt.Sprintf("%s %s %s", level, msg, strings.Join(keys, ",")))
	}
	sort.Strings(evs)
	return evs
}

// runLoggedSession drives an engine through a retry, a refresh, a refused
// refresh and the session's end, logging with cfg's logger.
func runLoggedSession(t *testing.T, logTo func(*engine.Config)) {
	var flaky atomic.Int64
	s := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/flaky" && flaky.Add(1) == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	})
	s.refreshStatus = func(n int64) int {
		if n > 1 {
			return http.StatusBadRequest
		}
		return http.StatusOK
	}
	cfg := authConfig(s)
	logTo(&cfg)
	e, err := engine.New(cfg)
	require.NoError(t, err)
	ctx := ctxTimeout(t, 5*time.Second)
	_, err = e.Get(ctx, "/first") // 401, refresh, replay
	require.NoError(t, err)
	_, err = e.Get(ctx, "/flaky") // 503, retry
	require.NoError(t, err)
	s.expire()
	_, err = e.Get(ctx, "/second") // 401, refresh refused, session over
	require.ErrorIs(t, err, errors.ErrSessionExpired)
	require.NoError(t, e.Close()) // flushes the hooks' log lines
}

// With Config.Slog set the engine logs the same events, at the same
// levels and with the same fields, as through zerolog.
func TestSlogGetsTheEventsZerologGets(t *testing.T) {
	zl, buf := captureLog()
	runLoggedSession(t, func(c *engine.Config) { c.Logger = zl })
	want := zerologEvents(t, buf.String())

	h := newSlogRecords(slog.LevelDebug)
	runLoggedSession(t, func(c *engine.Config) { c.Slog = slog.New(h) })
	got := h.events()

	require.NotEmpty(t, want)
	assert.Equal(t, want, got)
	joined := strings.Join(got, "\n")
	for _, ev := range []string{"debug attempt ", "debug retry scheduled ", "info token refreshed ", "warn refresh refused ", "warn session expired "} {
		assert.Contains(t, joined, ev)
	}
}

// Slog wins over Logger when both are set, and the records carry typed
// values: whole numbers as integers, durations as durations.
func TestSlogRecordsAreTyped(t *testing.T) {
	zl, buf := captureLog()
	h := newSlogRecords(slog.LevelDebug)
	runLoggedSession(t, func(c *engine.Config) { c.Logger, c.Slog = zl, slog.New(h) })
	assert.Empty(t, buf.String(), "Slog replaces Logger")

	var attempts int
	for _, r := range h.records() {
		if r.Message != "attempt" {
			continue
		}
		attempts++
		assert.Equal(t, slog.LevelDebug, r.Level)
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "status", "attempt":
				assert.Equal(t, slog.KindInt64, a.Value.Kind(), a.Key)
			case "duration":
				assert.Equal(t, slog.KindDuration, a.Value.Kind(), a.Key)
			case "method", "path":
				assert.Equal(t, slog.KindString, a.Value.Kind(), a.Key)
			}
			return true
		})
	}
	assert.GreaterOrEqual(t, attempts, 5)
}

// A handler that enables Info and up gets no debug event, and the engine
// builds none.
func TestSlogHonoursTheHandlersLevel(t *testing.T) {
	h := newSlogRecords(slog.LevelInfo)
	runLoggedSession(t, func(c *engine.Config) { c.Slog = slog.New(h) })
	evs := h.events()
	require.NotEmpty(t, evs)
	for _, ev := range evs {
		assert.False(t, strings.HasPrefix(ev, "debug"), ev)
	}
	assert.Contains(t, strings.Join(evs, "\n"), "info token refreshed")
}

// What the secrets tests prove for zerolog holds through slog: no token,
// refresh token, query value or user info reaches a record.
func TestSlogNeverSeesSecrets(t *testing.T) {
	const secret = "s3cr3t-query-value"
	var sb syncBuffer
	logger := slog.New(slog.NewJSONHandler(&sb, &slog.HandlerOptions{Level: slog.LevelDebug - 4})).With("svc", "crawler")

	s := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close() // a transport error that quotes the URL
		}
	})
	cfg := authConfig(s)
	cfg.BaseURL = strings.Replace(s.URL, "http://", "http://user:"+secret+"@", 1)
	cfg.Slog = logger
	cfg.Retry.MaxAttempts = 2
	cfg.Auth.Refresh.Path = "/refresh?client_secret=" + secret
	e := newEngine(t, cfg)
	_, err := e.Do(ctxTimeout(t, 5*time.Second), requests.New("GET", "/reset", requests.WithQuery("api_key", secret)))
	require.Error(t, err)
	require.NoError(t, e.Close())

	out := sb.String()
	assert.Contains(t, out, `"msg":"attempt"`)
	assert.Contains(t, out, `"msg":"token refreshed"`)
	assert.Contains(t, out, `"svc":"crawler"`, "the logger's own attributes are kept")
	for _, v := range []string{secret, "refresh-1", "access-2", "refresh-2"} {
		assert.NotContains(t, out, v)
	}
}
