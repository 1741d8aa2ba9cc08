package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/internal/redistest"
)

// proc is one courier process started by a fleet test.
type fleetProc struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{} // closed when the process has exited
	code           int
}

// fleetBinary is courier built without the race detector, for the fleet
// tests that run eight processes at a time: the race detector's cost,
// times eight, would keep them from reaching the rates they test. The
// race detector still covers the same code in the package's other tests
// and in fleet/'s.
var fleetBinary = sync.OnceValues(func() (string, error) {
	// Next to courierBin, so TestMain removes it too.
	bin := filepath.Join(filepath.Dir(courierBin), "courier-norace")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building courier: %v: %s", err, out)
	}
	return bin, nil
})

// startFleetProc starts the binary with a clean environment plus env. The
// test kills it, if it still runs, when it ends.
func startFleetProc(t *testing.T, env []string, args ...string) *fleetProc {
	t.Helper()
	bin, err := fleetBinary()
	require.NoError(t, err)
	p := &fleetProc{done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			p.code = ee.ExitCode()
		case err != nil:
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait waits for the process to exit, at most 90 s.
func (p *fleetProc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("courier did not finish: %s", p.stderr.String())
	}
}

// inputFiles writes n files of per lines each, /prefix/<file>-<line>, and
// returns their paths.
func inputFiles(t *testing.T, n, per int, prefix string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i := range n {
		var b strings.Builder
		for j := range per {
			fmt.Fprintf(&b, "%s/%d-%d\n", prefix, i, j)
		}
		p := filepath.Join(dir, fmt.Sprintf("in-%d.txt", i))
		require.NoError(t, os.WriteFile(p, []byte(b.String()), 0o600))
		paths = append(paths, p)
	}
	return paths
}

// windowCounter counts requests per one-second window of its own clock and
// answers 429 to any request past limit in its window.
type windowCounter struct {
	limit int

	mu       sync.Mutex // protects the fields below
	start    time.Time
	windows  []int
	rejected int
}

func (c *windowCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	now := time.Now()
	if c.start.IsZero() {
		c.start = now
	}
	i := int(now.Sub(c.start) / time.Second)
	for len(c.windows) <= i {
		c.windows = append(c.windows, 0)
	}
	c.windows[i]++
	over := c.windows[i] > c.limit
	if over {
		c.rejected++
	}
	c.mu.Unlock()
	if over {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"ok":true}`))
}

func TestFleetRateLimitHoldsAcrossEightProcesses(t *testing.T) {
	// 8 processes share a fleet limit of 500 requests/s (burst 10). The
	// server counts per one-second window: no window may pass the limit
	// plus burst by more than 5%, and no request may be refused.
	const (
		procs, perProc = 8, 190 // about 3 s of traffic at the limit
		rate, burst    = 500, 10
	)
	rdb := redistest.Start(t, redistest.Options{})
	counter := &windowCounter{limit: rate*105/100 + burst}
	api := httptest.NewServer(counter)
	defer api.Close()

	var ps []*fleetProc
	for _, in := range inputFiles(t, procs, perProc, "/items") {
		ps = append(ps, startFleetProc(t, nil, "fetch", "--base-url", api.URL,
			"--redis", rdb.URL(), "--fleet", "rate-test",
			"--rate", fmt.Sprint(rate), "--burst", fmt.Sprint(burst),
			"--concurrency", "16", "--summary=false", in))
	}
	for _, p := range ps {
		p.wait(t)
		require.Equal(t, 0, p.code, "stderr: %s", p.stderr.String())
		lines := parseOutput(t, p.stdout.String())
		require.Len(t, lines, perProc)
		for _, l := range lines {
			assert.Equal(t, 200, l.Status)
		}
	}
	counter.mu.Lock()
	defer counter.mu.Unlock()
	t.Logf("requests per one-second window: %v", counter.windows)
	for _, p := range ps {
		if p.stderr.Len() > 0 {
			t.Logf("stderr: %s", p.stderr.String())
		}
	}
	assert.Zero(t, counter.rejected, "429s")
	for i, n := range counter.windows {
		assert.LessOrEqual(t, n, counter.limit, "window %d", i)
	}
	_ = context.Background
}

func TestFetchFleetFlagsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--fleet", "crawl"}, "--fleet needs --redis"},
		{[]string{"--redis", "redis://localhost:1", "--fleet", "a b"}, "--fleet: fleet name has ' '"},
		{[]string{"--redis", "http://:hunter2@localhost"}, `--redis: redis URL "http://localhost": scheme "http"`},
		{[]string{"--redis", "redis://:hunter2@localhost/x"}, "invalid database number"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := courier(t, "/items/1\n", nil, append([]string{"fetch", "--base-url", "http://127.0.0.1:1"}, tc.args...)...)
			assert.Equal(t, exitUsage, r.code)
			assert.Contains(t, r.stderr, tc.want)
			assert.NotContains(t, r.stderr, "hunter2")
		})
	}
}

func TestFetchWithRedisAwayFromTheStartFailsClearly(t *testing.T) {
	// A process that cannot reach the fleet's store cannot know whether
	// the fleet's session is newer than its own: it waits for Redis,
	// bounded, then stops with an error that says so, having sent nothing.
	rdb := redistest.Start(t, redistest.Options{})
	url := rdb.URL()
	rdb.Stop()
	api := startDemo(t, demo.Config{})
	r := courier(t, "/items/1\n/items/2\n", tokenEnv(api.Login()), "fetch", "--base-url", api.URL,
		"--redis", url, "--rate", "100", "--summary=false")
	assert.Equal(t, exitUsage, r.code, r.stderr)
	assert.Contains(t, r.stderr, "does not answer")
	assert.Contains(t, r.stderr, "redis unavailable")
	assert.Zero(t, api.Stats().Requests, "nothing sent")
}
