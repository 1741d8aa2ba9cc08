package main

import (
	"bufio"
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

// writeTokenFile starts a token file holding tk, as a user would write it.
func writeTokenFile(t *testing.T, tk demo.Tokens) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "tokens.json")
	b, err := json.Marshal(map[string]string{"access_token": tk.AccessToken, "refresh_token": tk.RefreshToken})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, b, 0o600))
	return file
}

// savedTokens reads a token file; it fails the test if the file is torn.
func savedTokens(t *testing.T, file string) (access, refresh string) {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	var v struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	require.NoError(t, json.Unmarshal(b, &v), "the token file is whole: %q", b)
	return v.AccessToken, v.RefreshToken
}

func itemLines(from, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "/items/%d\n", from+i)
	}
	return b.String()
}

// spawned is a courier process the test talks to while it runs.
type spawned struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex // protects stderr
	stderr strings.Builder
	seen   chan string // stderr lines, as they come
	done   chan struct{}
	stdout strings.Builder
}

func spawnCourier(t *testing.T, env []string, args ...string) *spawned {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, courierBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	errPipe, err := cmd.StderrPipe()
	require.NoError(t, err)
	p := &spawned{cmd: cmd, stdin: stdin, seen: make(chan string, 64), done: make(chan struct{})}
	cmd.Stdout = &p.stdout
	require.NoError(t, cmd.Start())
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.seen <- sc.Text():
			default:
			}
		}
	}()
	return p
}

// wait waits for the process and returns its exit code.
func (p *spawned) wait(t *testing.T) int {
	t.Helper()
	<-p.done
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if err != nil {
		require.ErrorAs(t, err, &ee)
		return ee.ExitCode()
	}
	return 0
}

// waitFor waits until stderr has a line containing s.
func (p *spawned) waitFor(t *testing.T, s string) {
	t.Helper()
	for {
		select {
		case line := <-p.seen:
			if strings.Contains(line, s) {
				return
			}
		case <-p.done:
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("courier exited before printing %q; stderr:\n%s", s, p.stderr.String())
		}
	}
}

// TestSIGINTDuringRefreshStillStoresTheRotatedToken pins the first bug of
// durable sessions: Ctrl-C while the server held a refresh open cancelled
// it after the server had spent the old refresh token, and the token file
// kept the dead one, so the next run reused it and lost the session.
func TestSIGINTDuringRefreshStillStoresTheRotatedToken(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	api := startDemo(t, demo.Config{AccessUses: 2, HoldRefresh: func() {
		once.Do(func() { close(held) })
		<-release
	}})
	t.Cleanup(unblock) // before the server's Close, which waits for the handler
	tk := api.Login()
	file := writeTokenFile(t, tk)
	p := spawnCourier(t, nil, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh",
		"--token-file", file, "--concurrency", "1")
	_, err := fmt.Fprint(p.stdin, itemLines(0, 5))
	require.NoError(t, err)
	require.NoError(t, p.stdin.Close())
	<-held // the server has spent the refresh token and holds its answer
	require.NoError(t, p.cmd.Process.Signal(os.Interrupt))
	p.waitFor(t, "stopped by SIGINT")
	unblock()
	code := p.wait(t)
	assert.Equal(t, 130, code, p.stderr.String())
	_, rt := savedTokens(t, file)
	assert.NotEqual(t, tk.RefreshToken, rt, "the rotated refresh token was stored before exiting")

	r := courier(t, itemLines(10, 3), nil, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh", "--token-file", file)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Zero(t, api.Stats().RefreshReuse, "the second run did not reuse a rotated refresh token")
}

// TestKillDuringRefreshNeverTearsTheTokenFile kills courier with SIGKILL
// right after the server answered a refresh: the token file holds the old
// tokens or the new ones, whole, and a following run works whenever the
// server still accepts what it holds.
func TestKillDuringRefreshNeverTearsTheTokenFile(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			var (
				mu     sync.Mutex
				target *os.Process
				killed = make(chan struct{})
				once   sync.Once
			)
			api := startDemo(t, demo.Config{AccessUses: 3, RefreshAnswered: func() {
				once.Do(func() {
					mu.Lock()
					target.Signal(syscall.SIGKILL)
					mu.Unlock()
					close(killed)
				})
			}})
			tk := api.Login()
			file := writeTokenFile(t, tk)
			mu.Lock()
			p := spawnCourier(t, nil, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh",
				"--token-file", file, "--concurrency", "1")
			target = p.cmd.Process
			mu.Unlock()
			_, err := fmt.Fprint(p.stdin, itemLines(0, 10))
			require.NoError(t, err)
			<-killed
			assert.Equal(t, -1, p.wait(t), "killed by a signal")

			at, rt := savedTokens(t, file)
			if rt == tk.RefreshToken {
				assert.Equal(t, tk.AccessToken, at, "the old pair, whole")
				return // the server has spent it: nothing can recover this session
			}
			assert.NotEqual(t, tk.AccessToken, at, "the new pair, whole")
			r := courier(t, itemLines(20, 5), nil, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh", "--token-file", file)
			assert.Equal(t, 0, r.code, r.stderr)
			assert.Zero(t, api.Stats().RefreshReuse)
		})
	}
}

// TestProcessesSharingATokenFileRefreshOncePerExpiry pins the third bug:
// two fetches sharing a token file each refreshed, the second with the
// already-rotated token, and its batch failed (and with reuse detection
// the first one's session died too). Four processes now make exactly one
// refresh per expiry between them.
func TestProcessesSharingATokenFileRefreshOncePerExpiry(t *testing.T) {
	const procs, perProc, uses = 4, 5000, 500
	api := startDemo(t, demo.Config{AccessUses: uses})
	file := writeTokenFile(t, api.Login())
	runs := make([]struct{ r cliRun }, procs)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Go(func() {
			runs[i].r = courier(t, itemLines(i*perProc, perProc), nil, "fetch", "--base-url", api.URL,
				"--refresh-path", "/auth/refresh", "--token-file", file, "--concurrency", "8", "--summary=false")
		})
	}
	wg.Wait()
	for i, rn := range runs {
		require.Equal(t, 0, rn.r.code, "process %d: %s", i, rn.r.stderr)
		out := parseOutput(t, rn.r.stdout)
		require.Len(t, out, perProc)
		for _, l := range out {
			require.Nil(t, l.Error, "process %d line %d", i, l.Line)
		}
	}
	st := api.Stats()
	assert.Zero(t, st.RefreshReuse, "no rotated refresh token was ever sent")
	assert.EqualValues(t, procs*perProc/uses-1, st.Refreshes, "one refresh per expiry, among all processes")
}

// TestClientCredentialsGrant runs the client-credentials grant against a
// real OAuth 2.0 token endpoint, with the credentials as HTTP Basic and as
// form fields, through token expiry.
func TestClientCredentialsGrant(t *testing.T) {
	for _, auth := range []string{"basic", "post"} {
		t.Run(auth, func(t *testing.T) {
			api := startDemo(t, demo.Config{AccessUses: 10})
			env := []string{"COURIER_CLIENT_ID=demo-client", "COURIER_CLIENT_SECRET=demo-secret"}
			r := courier(t, itemLines(0, 45), env, "fetch", "--base-url", api.URL, "--grant", "client_credentials",
				"--token-url", api.URL+"/oauth/token", "--client-auth", auth, "--scope", "items:read", "--concurrency", "1")
			require.Equal(t, 0, r.code, r.stderr)
			out := parseOutput(t, r.stdout)
			require.Len(t, out, 45)
			assert.EqualValues(t, 5, api.Stats().ClientGrants, "a first token, then a new one at each expiry")
			assert.NotContains(t, r.stdout+r.stderr, "demo-secret")
		})
	}
	t.Run("wrong secret", func(t *testing.T) {
		api := startDemo(t, demo.Config{})
		env := []string{"COURIER_CLIENT_ID=demo-client", "COURIER_CLIENT_SECRET=nope"}
		r := courier(t, itemLines(0, 3), env, "fetch", "--base-url", api.URL, "--grant", "client_credentials", "--token-url", "/oauth/token")
		assert.Equal(t, 2, r.code, "refused client credentials are a configuration error: %s", r.stderr)
		assert.Contains(t, r.stderr, "configuration error: the token endpoint answered invalid_client")
		assert.Contains(t, r.stderr, "unknown client or wrong secret", "the endpoint's error_description")
		for _, l := range parseOutput(t, r.stdout) {
			require.NotNil(t, l.Error, "line %d", l.Line)
			assert.Contains(t, *l.Error, "invalid_client", "line %d", l.Line)
		}
		assert.NotContains(t, r.stdout+r.stderr, "nope")
	})
}

func TestSessionUsageErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.json")
	require.NoError(t, os.WriteFile(empty, []byte(`{}`), 0o600))
	torn := filepath.Join(dir, "torn.json")
	require.NoError(t, os.WriteFile(torn, []byte(`{"access_token":"sec`), 0o600))
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--grant", "password"}, nil, `--grant "password"`},
		{[]string{"--grant", "client_credentials"}, nil, "needs --token-url"},
		{[]string{"--grant", "client_credentials", "--token-url", "/t"}, nil, "COURIER_CLIENT_ID and COURIER_CLIENT_SECRET"},
		{[]string{"--refresh-path", "/r", "--token-url", "/t"}, nil, "give one"},
		{[]string{"--scope", "x", "--refresh-path", "/r"}, nil, "--scope goes with --grant client_credentials"},
		{[]string{"--token-file", filepath.Join(dir, "missing.json")}, nil, "missing.json"},
		{[]string{"--token-file", empty}, nil, "holds no tokens"},
		{[]string{"--token-file", torn}, nil, "not JSON"},
	} {
		r := courier(t, "", tc.env, append([]string{"fetch", "--base-url", "http://127.0.0.1:1"}, tc.args...)...)
		assert.Equal(t, 2, r.code, "%v: %s", tc.args, r.stderr)
		assert.Contains(t, r.stderr, tc.want, "%v", tc.args)
		assert.NotContains(t, r.stderr, "sec\"", "%v", tc.args)
	}
}

// TestTokenFileHoldsNewTokensBeforeTheyAreUsed pins the second bug: the
// token file was saved asynchronously, on the hook goroutine, after the
// requests that waited for the refresh had already been replayed with the
// new token; a crash in between lost the session. Now the file holds a
// token before any request carries it.
func TestTokenFileHoldsNewTokensBeforeTheyAreUsed(t *testing.T) {
	api := demo.New(demo.Config{AccessUses: 1}) // a refresh for every request
	tk := api.Login()
	file := writeTokenFile(t, tk)
	var mu sync.Mutex
	var early []string // requests that carried a token the file did not hold yet
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bearer := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "); bearer != "" && bearer != tk.AccessToken {
			at, _ := savedTokens(t, file)
			if at != bearer {
				mu.Lock()
				early = append(early, r.URL.Path)
				mu.Unlock()
			}
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	r := courier(t, itemLines(0, 60), nil, "fetch", "--base-url", srv.URL, "--refresh-path", "/auth/refresh",
		"--token-file", file, "--concurrency", "1")
	require.Equal(t, 0, r.code, r.stderr)
	assert.EqualValues(t, 59, api.Stats().Refreshes)
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, early, "requests carried a token before the token file held it")
}
