package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/redistest"
)

func TestBreakerFlag(t *testing.T) {
	var cfg engine.Config
	require.NoError(t, (&breakerOptions{spec: "5"}).apply(&cfg))
	assert.Equal(t, engine.Breaker{ConsecutiveFailures: 5}, cfg.Breaker)
	require.NoError(t, (&breakerOptions{spec: "20/30s"}).apply(&cfg))
	assert.Equal(t, engine.Breaker{Failures: 20, Window: 30 * time.Second}, cfg.Breaker)

	for _, tc := range []struct{ spec, want string }{
		{"0", `--breaker "0": FAILURES "0" is not a whole number`},
		{"many", `--breaker "many": FAILURES "many"`},
		{"5/", `--breaker "5/": WINDOW "" is not a duration`},
		{"5/-1s", `--breaker "5/-1s": WINDOW "-1s"`},
		{"5/30", `--breaker "5/30": WINDOW "30"`},
	} {
		r := courier(t, "", nil, "fetch", "--base-url", "http://127.0.0.1:1", "--breaker", tc.spec)
		assert.Equal(t, 2, r.code, tc.spec)
		assert.Contains(t, r.stderr, tc.want, tc.spec)
	}
}

// healingAPI answers 500 to /down/* until healed, 200 otherwise.
type healingAPI struct {
	*httptest.Server
	healed atomic.Bool
	down   atomic.Int64 // requests to /down/* that reached it
}

func startHealingAPI(t *testing.T) *healingAPI {
	a := &healingAPI{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/down/") {
			a.down.Add(1)
			if !a.healed.Load() {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(a.Close)
	return a
}

func TestFetchBreakerRefusesLinesToADeadHost(t *testing.T) {
	api := startHealingAPI(t)
	var b strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "/down/%d\n", i)
	}
	out := filepath.Join(t.TempDir(), "results.jsonl")
	args := []string{"fetch", "--base-url", api.URL, "--max-attempts", "1", "--concurrency", "1", "--breaker", "3", "--out", out}
	r := courier(t, b.String(), nil, append(args, "--resume")...)
	require.Equal(t, 1, r.code, r.stderr)
	assert.Equal(t, int64(3), api.down.Load(), "three failures, then nothing is sent")
	assert.Contains(t, r.stderr, "breaker     1 trips, 27 lines refused while open")

	data, err := os.ReadFile(out)
	require.NoError(t, err)
	lines := parseOutput(t, string(data))
	require.Len(t, lines, 30)
	for _, l := range lines[3:] {
		require.NotNil(t, l.Error, "line %d", l.Line)
		assert.Contains(t, *l.Error, "circuit open for 127.0.0.1:", "line %d", l.Line)
		assert.Contains(t, *l.Error, "500 Internal Server Error", "line %d: the failure that opened it", l.Line)
		assert.Zero(t, l.Status, "line %d: no answer came", l.Line)
		assert.Zero(t, l.Attempts, "line %d: nothing was sent", l.Line)
	}

	// The host is back: --resume-failed fetches the refused lines again.
	api.healed.Store(true)
	r = courier(t, b.String(), nil, append(args, "--resume-failed")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, int64(33), api.down.Load())
	assert.Contains(t, r.stderr, "breaker     0 trips, 0 lines refused while open")
	data, err = os.ReadFile(out)
	require.NoError(t, err)
	lines = parseOutput(t, string(data))
	require.Len(t, lines, 30)
	for _, l := range lines {
		assert.Nil(t, l.Error, "line %d", l.Line)
	}
}

func TestFetchBreakerIsSharedByTheFleet(t *testing.T) {
	rdb := redistest.Start(t, redistest.Options{})
	api := startHealingAPI(t)
	var b strings.Builder
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "/down/%d\n", i)
	}
	args := []string{"fetch", "--base-url", api.URL, "--max-attempts", "1", "--concurrency", "1",
		"--breaker", "3", "--redis", rdb.URL(), "--fleet", "breaker-test"}
	r := courier(t, b.String(), nil, args...)
	require.Equal(t, 1, r.code, r.stderr)
	assert.Equal(t, int64(3), api.down.Load())
	assert.Contains(t, r.stderr, "breaker     1 trips, 7 lines refused while open")

	// Another process of the fleet, within the cooldown: the host's
	// circuit is already open, so it sends nothing.
	r = courier(t, b.String(), nil, args...)
	require.Equal(t, 1, r.code, r.stderr)
	assert.Equal(t, int64(3), api.down.Load(), "the second process sent nothing")
	assert.Contains(t, r.stderr, "breaker     0 trips, 10 lines refused while open")
	for _, l := range parseOutput(t, r.stdout) {
		require.NotNil(t, l.Error)
		assert.Contains(t, *l.Error, "circuit open", "line %d", l.Line)
		assert.Contains(t, *l.Error, "another engine", "line %d: the opening came from the fleet", l.Line)
	}
}
