package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/internal/redistest"
)

// process is a courier process started in the background.
type process struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
	err    error // set before done is closed
}

func startBackground(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	p := &process{cmd: exec.CommandContext(ctx, courierBin, args...), done: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	p.cmd.Stderr = &p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		cancel()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait returns the exit code.
func (p *process) wait() int {
	<-p.done
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func (p *process) killed() bool {
	<-p.done
	ee, ok := p.err.(*exec.ExitError)
	if !ok {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// requireCollected checks collect's output: lines 1..n once each, in
// order, all 2xx.
func requireCollected(t *testing.T, stdout string, n int) {
	t.Helper()
	out := parseOutput(t, stdout)
	require.Len(t, out, n)
	for i, l := range out {
		require.Equal(t, i+1, l.Line)
		require.Nil(t, l.Error, "line %d", l.Line)
	}
}

func TestFetchBatchSurvivesKilledWorkers(t *testing.T) {
	const lines, concurrency = 5000, 8
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	rds := redistest.Start(t, redistest.Options{})
	input, posts := mixedBatch(lines)
	inPath := filepath.Join(t.TempDir(), "batch.txt")
	require.NoError(t, os.WriteFile(inPath, []byte(input), 0o600))
	worker := []string{"fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "b1",
		"--concurrency", fmt.Sprint(concurrency), "--lease", "500ms"}

	// Two workers die by SIGKILL as the server takes its 1,200th and
	// 2,400th request; one more joins after that.
	var workers [5]*process
	var mu sync.Mutex // protects workers and killedAt
	killedAt := map[int64]int{1200: 1, 2400: 2}
	joined := make(chan struct{})
	kill := func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		if i, ok := killedAt[n]; ok {
			_ = workers[i].cmd.Process.Kill()
			if i == 2 {
				close(joined)
			}
		}
	}
	// The workers that join may start before the batch is made: they
	// wait for it, as told.
	joiner := append(worker[:len(worker):len(worker)], "--wait-for-batch")
	mu.Lock()
	workers[0] = startBackground(t, env, append(worker, "--idempotency-keys", inPath)...)
	for i := 1; i <= 3; i++ {
		workers[i] = startBackground(t, env, joiner...)
	}
	mu.Unlock()
	api.onRequest.Store(&kill)
	<-joined
	mu.Lock()
	workers[4] = startBackground(t, env, joiner...)
	mu.Unlock()

	for _, i := range []int{0, 3, 4} {
		require.Equal(t, 0, workers[i].wait(), "worker %d: %s", i, workers[i].stderr.String())
	}
	api.onRequest.Store(nil)
	for _, i := range []int{1, 2} {
		assert.True(t, workers[i].killed(), "worker %d was killed mid-run: %s", i, workers[i].stderr.String())
	}
	assert.Contains(t, workers[0].stderr.String(), "batch b1: 5000 lines in the batch")
	assert.Contains(t, workers[4].stderr.String(), "done        5000")

	r := courier(t, "", nil, "collect", "--redis", rds.URL(), "--batch", "b1")
	require.Equal(t, 0, r.code, r.stderr)
	requireCollected(t, r.stdout, lines)
	dup := api.duplicateGETs()
	t.Logf("duplicate GETs: %d", dup)
	assert.LessOrEqual(t, dup, 2*2*concurrency, "at most 2 x concurrency per killed worker")
	assert.EqualValues(t, posts, api.Stats().Creates, "every POST applied once")

	r = courier(t, "", nil, "batch", "status", "--redis", rds.URL(), "b1")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "done        5000\nfailed      0\npending     0\n")
	assert.Contains(t, r.stdout, "workers     0\n", "the killed workers' leases ran out; the others left")

	r = courier(t, "", nil, "batch", "rm", "--redis", rds.URL(), "b1")
	require.Equal(t, exitUsage, r.code, "rm needs the fleet named")
	assert.Contains(t, r.stderr, "--fleet NAME or --base-url URL is required")
	r = courier(t, "", nil, "batch", "rm", "--redis", rds.URL(), "--base-url", api.URL, "b1")
	require.Equal(t, 0, r.code, r.stderr)
	r = courier(t, "", nil, "batch", "status", "--redis", rds.URL(), "b1")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "no batch b1")
}

func TestFetchBatchSurvivesARedisRestart(t *testing.T) {
	const lines = 2000
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	rds := redistest.Start(t, redistest.Options{AppendOnly: true})
	input, posts := mixedBatch(lines)
	inPath := filepath.Join(t.TempDir(), "batch.txt")
	require.NoError(t, os.WriteFile(inPath, []byte(input), 0o600))
	worker := []string{"fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "b2",
		"--concurrency", "8", "--lease", "1s", "--idempotency-keys"}

	restart := make(chan struct{})
	trigger := func(n int64) {
		if n == 800 {
			close(restart)
		}
	}
	api.onRequest.Store(&trigger)
	a := startBackground(t, env, append(worker, inPath)...)
	b := startBackground(t, env, append(worker, "--wait-for-batch")...)
	// collect --wait follows the batch through the restart; told the
	// fleet (by the workers' base URL), it waits for the batch to be made.
	collected := filepath.Join(t.TempDir(), "results.jsonl")
	collector := startBackground(t, nil, "collect", "--redis", rds.URL(), "--base-url", api.URL, "--batch", "b2", "--wait", "--out", collected)
	<-restart
	rds.Kill()
	rds.Restart()

	require.Equal(t, 0, a.wait(), a.stderr.String())
	require.Equal(t, 0, b.wait(), b.stderr.String())
	api.onRequest.Store(nil)
	require.Equal(t, 0, collector.wait(), collector.stderr.String())
	data, err := os.ReadFile(collected)
	require.NoError(t, err)
	requireCollected(t, string(data), lines)

	r := courier(t, "", nil, "collect", "--redis", rds.URL(), "--batch", "b2")
	require.Equal(t, 0, r.code, r.stderr)
	requireCollected(t, r.stdout, lines)
	assert.EqualValues(t, posts, api.Stats().Creates, "every POST applied once")
}

func TestFetchBatchUsageErrors(t *testing.T) {
	rds := redistest.Start(t, redistest.Options{})
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	in := filepath.Join(t.TempDir(), "in.txt")
	require.NoError(t, os.WriteFile(in, []byte("/items/1\n/items/2\n"), 0o600))
	r := courier(t, "", env, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "b", in)
	require.Equal(t, 0, r.code, r.stderr)

	require.NoError(t, os.WriteFile(in, []byte("/items/1\n/items/3\n"), 0o600))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "b", in}, 2, "input line 2 differs from the batch's"},
		{[]string{"fetch", "--base-url", api.URL, "--batch", "b"}, 2, "--redis URL is required"},
		{[]string{"fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "b", "--out", "x"}, 2, "read them with courier collect"},
		{[]string{"fetch", "--base-url", api.URL, "--redis", "http://:hunter2@x", "--batch", "b"}, 2, `scheme "http"`},
		{[]string{"fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "no spaces"}, 2, "batch name"},
		{[]string{"collect", "--redis", rds.URL()}, 2, "--batch NAME is required"},
		{[]string{"collect", "--redis", rds.URL(), "--batch", "nope"}, 1, "no batch nope"},
		{[]string{"collect", "--redis", rds.URL(), "--fleet", "other", "--batch", "b"}, 1, "no batch b in fleet other"},
		{[]string{"fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "nope"}, 2, "no such batch"},
		{[]string{"fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "b", "--wait-for-batch", in}, 2, "--wait-for-batch is for a worker that joins"},
		{[]string{"collect", "--redis-ca", "ca.pem", "--batch", "b"}, 2, "--redis-ca needs --redis"},
		{[]string{"batch", "rm", "--redis", rds.URL(), "b"}, 2, "--fleet NAME or --base-url URL is required"},
		{[]string{"batch", "status", "--redis", rds.URL()}, 2, "want status NAME or rm NAME"},
		{[]string{"batch", "stop", "--redis", rds.URL(), "b"}, 2, "want status NAME or rm NAME"},
	} {
		r := courier(t, "", env, tc.args...)
		assert.Equal(t, tc.code, r.code, "%v: %s", tc.args, r.stderr)
		assert.Contains(t, r.stderr, tc.want, "%v", tc.args)
		assert.NotContains(t, r.stderr, "hunter2")
	}
}
