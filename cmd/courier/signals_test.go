package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
)

// running is a `courier fetch` process the test talks to through pipes.
type running struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *lockedBuffer
}

// lockedBuffer is a process's stderr, readable while the process writes
// it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startCourier starts the binary with a clean environment plus env; the
// process is killed if the test ends first.
func startCourier(t *testing.T, env []string, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, courierBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	r := &running{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout), stderr: &lockedBuffer{}}
	cmd.Stderr = r.stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	return r
}

// line reads the next output line.
func (r *running) line(t *testing.T) outLine {
	t.Helper()
	s, err := r.stdout.ReadString('\n')
	require.NoError(t, err, "an output line")
	var l outLine
	require.NoError(t, json.Unmarshal([]byte(s), &l), "output line %q", s)
	return l
}

// stop sends sig and returns the exit status and the lines written after
// the ones already read. Its bound is the process's 60 s: a process that
// ignores the signal fails the test there.
func (r *running) stop(t *testing.T, sig syscall.Signal) (int, []outLine) {
	t.Helper()
	require.NoError(t, r.cmd.Process.Signal(sig))
	rest, err := io.ReadAll(r.stdout)
	require.NoError(t, err)
	err = r.cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return code, parseOutput(t, string(rest))
}

var stopSignals = []struct {
	sig  syscall.Signal
	name string
	code int
}{{syscall.SIGINT, "SIGINT", 130}, {syscall.SIGTERM, "SIGTERM", 143}}

func TestFetchSignalStopsWhileStdinIsQuiet(t *testing.T) {
	api := startDemo(t, demo.Config{})
	for _, s := range stopSignals {
		t.Run(s.name, func(t *testing.T) {
			r := startCourier(t, tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--summary=false")
			_, err := io.WriteString(r.stdin, "/items/1\n/items/2\n")
			require.NoError(t, err)
			assert.Equal(t, 1, r.line(t).Line)
			assert.Equal(t, 2, r.line(t).Line)
			// stdin stays open and quiet: fetch is blocked reading it.
			code, rest := r.stop(t, s.sig)
			assert.Equal(t, s.code, code, r.stderr.String())
			assert.Empty(t, rest)
			assert.Contains(t, r.stderr.String(), "stopped by "+s.name)
		})
	}
	t.Run("--resume", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out.jsonl")
		r := startCourier(t, tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--summary=false", "--resume", "--out", out)
		_, err := io.WriteString(r.stdin, "/items/1\n")
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			b, _ := os.ReadFile(out)
			return bytes.Count(b, []byte("\n")) == 1
		}, 30*time.Second, 5*time.Millisecond, "line 1 is answered")
		code, _ := r.stop(t, syscall.SIGINT)
		assert.Equal(t, 130, code, r.stderr.String())
	})
}

func TestFetchSignalStopsWhileAFIFOInputIsQuiet(t *testing.T) {
	api := startDemo(t, demo.Config{})
	fifo := filepath.Join(t.TempDir(), "requests")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	r := startCourier(t, tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--summary=false", fifo)
	// Opening for writing succeeds once courier has the FIFO open to read.
	w := openWriterWhenRead(t, fifo)
	defer w.Close()
	_, err := io.WriteString(w, "/items/1\n")
	require.NoError(t, err)
	assert.Equal(t, 1, r.line(t).Line)
	code, rest := r.stop(t, syscall.SIGINT)
	assert.Equal(t, 130, code, r.stderr.String())
	assert.Empty(t, rest)
}

// openWriterWhenRead opens fifo for writing as soon as a reader has it
// open, polling with a short tick.
func openWriterWhenRead(t *testing.T, fifo string) *os.File {
	t.Helper()
	var w *os.File
	require.Eventually(t, func() bool {
		f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return false // ENXIO: no reader yet
		}
		w = f
		return true
	}, 30*time.Second, 5*time.Millisecond)
	return w
}

func TestFetchSignalStopsRequestsWaitingOnTheLimiter(t *testing.T) {
	api := startDemo(t, demo.Config{})
	r := startCourier(t, tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--summary=false",
		"--rate", "0.001", "--burst", "1", "--concurrency", "1") // one worker: line 1 takes the one token
	// Line 1 is slow to answer, so line 2 is surely submitted by then.
	_, err := io.WriteString(r.stdin, "/slow/1?ms=300\n/items/2\n/items/3\n")
	require.NoError(t, err)
	require.NoError(t, r.stdin.Close()) // the whole input is read: only the limiter holds the batch
	first := r.line(t)
	assert.Nil(t, first.Error)
	code, rest := r.stop(t, syscall.SIGTERM)
	assert.Equal(t, 143, code, r.stderr.String())
	// Line 2 was submitted while line 1 ran (one worker, a queue behind
	// it); line 3 may not have been, and a line never submitted gets no
	// output.
	require.NotEmpty(t, rest, "every submitted line is answered, in order")
	require.LessOrEqual(t, len(rest), 2)
	for i, l := range rest {
		assert.Equal(t, i+2, l.Line)
		require.NotNil(t, l.Error)
		assert.Contains(t, *l.Error, fmt.Sprintf("line %d: interrupted (stopped by SIGTERM)", i+2))
	}
	assert.EqualValues(t, 1, api.Stats().Requests, "the waiting requests were never sent")
}

// A signal during a refresh that hangs used to leave fetch running for the
// whole request timeout (30 s by default), silently, and the test of it
// waited that long. Now the first signal writes every answered line, says
// that fetch waits for the refresh in flight and for how long at most, and
// exits 130/143 once the refresh is stored (or the wait is over); a second
// signal exits at once. The token file holds whole tokens, the old or the
// new, in every case.
func TestFetchSignalDuringAHangingRefresh(t *testing.T) {
	const before, after = `{"access_token":"a0","refresh_token":"r1"}`, `"refresh_token":"r2"`
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		code    int
		timeout string // --timeout: bounds the refresh attempt and the wait
		then    string // after the waiting message: "answer" the refresh, send a "second" signal, or "" (wait it out)
		stored  string // what the token file holds at the end
	}{
		{"SIGINT, the wait runs out", syscall.SIGINT, 130, "1s", "", before},
		{"SIGTERM, answered while waiting", syscall.SIGTERM, 143, "10s", "answer", after},
		{"a second SIGINT", syscall.SIGINT, 130, "10s", "second", before},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newRotatingAPI(t)
			hang := make(chan struct{})
			api.hang = hang
			refreshing := func() bool {
				api.mu.Lock()
				defer api.mu.Unlock()
				return len(api.refreshes) > 0
			}
			file := filepath.Join(t.TempDir(), "tokens.json")
			require.NoError(t, os.WriteFile(file, []byte(before), 0o600))

			r := startCourier(t, nil, "fetch", "--base-url", api.URL, "--summary=false", "--timeout", tc.timeout,
				"--refresh-path", "/auth/refresh", "--token-file", file)
			_, err := io.WriteString(r.stdin, "/items/1\n")
			require.NoError(t, err)
			require.NoError(t, r.stdin.Close())
			require.Eventually(t, refreshing, 30*time.Second, 5*time.Millisecond, "the refresh is at the server")

			start := time.Now()
			require.NoError(t, r.cmd.Process.Signal(tc.sig))
			first := r.line(t) // every answered line is written before the wait
			waiting := "waiting for the token refresh in flight to be saved to --token-file " + file
			require.Eventually(t, func() bool { return strings.Contains(r.stderr.String(), waiting) },
				30*time.Second, 5*time.Millisecond, "fetch says it waits")
			grace := map[string]string{"1s": "at most 2s", "10s": "at most 11s"}[tc.timeout]
			assert.Contains(t, r.stderr.String(), grace, "and for how long at most")
			switch tc.then {
			case "answer":
				close(hang)
			case "second":
				require.NoError(t, r.cmd.Process.Signal(tc.sig))
			}
			rest, err := io.ReadAll(r.stdout)
			require.NoError(t, err)
			assert.Empty(t, rest)
			err = r.cmd.Wait()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tc.code, ee.ExitCode(), r.stderr.String())
			if tc.then != "" {
				assert.Less(t, time.Since(start), 10*time.Second, "it did not wait out the timeout")
			}

			require.NotNil(t, first.Error)
			assert.Contains(t, *first.Error, "line 1: interrupted (stopped by "+signalName(tc.sig)+")")
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			if tc.stored == before {
				assert.JSONEq(t, before, string(data), "the token file is intact")
			} else {
				assert.Contains(t, string(data), tc.stored, "the rotated tokens were saved")
			}
			if tc.then == "" {
				assert.Contains(t, r.stderr.String(), "courier fetch: stopped by "+signalName(tc.sig))
			}
		})
	}
}

func TestFetchLineOverTheLimitGetsItsOwnErrorAndTheBatchGoesOn(t *testing.T) {
	api := startDemo(t, demo.Config{})
	t.Run("--max-line", func(t *testing.T) {
		input := "/items/1\n/" + strings.Repeat("a", 1024) + "\n/items/3\n/" + strings.Repeat("b", 1023) + "\n"
		r := courier(t, input, tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--max-line", "1KiB")
		assert.Equal(t, 1, r.code, r.stderr)
		out := parseOutput(t, r.stdout)
		require.Len(t, out, 4)
		assert.Nil(t, out[0].Error)
		require.NotNil(t, out[1].Error)
		assert.Equal(t, 2, out[1].Line)
		assert.Contains(t, *out[1].Error, "line 2: longer than --max-line (1KiB)")
		assert.Nil(t, out[2].Error)
		assert.Equal(t, 3, out[2].Line)
		require.NotNil(t, out[3].Error, "a line of exactly the limit is read")
		assert.Contains(t, *out[3].Error, "404")
	})
	t.Run("default 16MiB", func(t *testing.T) {
		input := "/" + strings.Repeat("a", 16<<20) + "\n/items/2"
		r := courier(t, input, tokenEnv(api.Login()), "fetch", "--base-url", api.URL)
		assert.Equal(t, 1, r.code, r.stderr)
		out := parseOutput(t, r.stdout)
		require.Len(t, out, 2)
		require.NotNil(t, out[0].Error)
		assert.Contains(t, *out[0].Error, "line 1: longer than --max-line (16MiB)")
		assert.Nil(t, out[1].Error, "the last line, without a newline, runs")
	})
}

func TestFetchMaxBodyBoundsResponses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 2048))
	}))
	defer srv.Close()
	r := courier(t, "/a\n", nil, "fetch", "--base-url", srv.URL, "--max-body", "1KiB")
	assert.Equal(t, 1, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 1)
	require.NotNil(t, out[0].Error)
	assert.Contains(t, *out[0].Error, "response body too large")

	r = courier(t, "/a\n", nil, "fetch", "--base-url", srv.URL, "--max-body", "2048")
	assert.Equal(t, 0, r.code, r.stderr)
}

func TestFetchSizeFlags(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want byteSize
		err  string
	}{
		{"512", 512, ""},
		{"64KiB", 64 << 10, ""},
		{"16mib", 16 << 20, ""},
		{"2 GiB", 2 << 30, ""},
		{"", 0, "want a number of bytes"},
		{"12XB", 0, "want a number of bytes"},
		{"1.5MiB", 0, "want a number of bytes"},
		{"0", 0, "at least 1 byte"},
		{"-3KiB", 0, "at least 1 byte"},
		{"9999999999GiB", 0, "too large"},
	} {
		got, err := parseSize(tc.in)
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, tc.in)
			continue
		}
		assert.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
	for _, args := range [][]string{{"--max-line", "12XB"}, {"--max-body", "0"}, {"--max-line", "2GiB"}} {
		r := courier(t, "", nil, append([]string{"fetch", "--base-url", "http://127.0.0.1:1"}, args...)...)
		assert.Equal(t, 2, r.code, "%v", args)
		assert.Contains(t, r.stderr, args[0], "the error names the flag")
	}
}

// TestFetchSignalStopsWhileASocketOnStdinIsQuiet covers input whose reads
// cannot be interrupted (a socket cannot be reopened non-blocking): the
// blocked read is left to end with the process, which still exits at once.
func TestFetchSignalStopsWhileASocketOnStdinIsQuiet(t *testing.T) {
	api := startDemo(t, demo.Config{})
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
	defer ours.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, courierBin, "fetch", "--base-url", api.URL, "--summary=false")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tokenEnv(api.Login())...)
	cmd.Stdin = theirs
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	theirs.Close()
	r := &running{cmd: cmd, stdout: bufio.NewReader(stdout), stderr: &lockedBuffer{}}
	_, err = io.WriteString(ours, "/items/1\n")
	require.NoError(t, err)
	assert.Equal(t, 1, r.line(t).Line)
	code, rest := r.stop(t, syscall.SIGINT)
	assert.Equal(t, 130, code)
	assert.Empty(t, rest)
}
