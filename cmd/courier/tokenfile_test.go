package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/internal/storetest"
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

// rotatingAPI rejects every access token but the latest it issued, and
// rotates both tokens at /auth/refresh (r1 -> a2/r2 -> a3/r3 ...). A
// refresh token is good once.
type rotatingAPI struct {
	*httptest.Server
	mu        sync.Mutex
	n         int      // number of the latest tokens
	refreshes []string // refresh tokens presented, in order
	seen      []string // Authorization of the API requests, in order
	hang      chan struct{}
}

func newRotatingAPI(t *testing.T) *rotatingAPI {
	a := &rotatingAPI{n: 1}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *rotatingAPI) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/auth/refresh" {
		var body struct {
			RefreshToken string `json:"refresh_token"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		a.mu.Lock()
		a.refreshes = append(a.refreshes, body.RefreshToken)
		hang := a.hang
		a.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			}
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if body.RefreshToken != fmt.Sprint("r", a.n) {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		a.n++
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"a%d","refresh_token":"r%d"}`, a.n, a.n)
		return
	}
	a.mu.Lock()
	a.seen = append(a.seen, r.Header.Get("Authorization"))
	ok := r.Header.Get("Authorization") == fmt.Sprint("Bearer a", a.n)
	a.mu.Unlock()
	if !ok {
		http.Error(w, "expired", http.StatusUnauthorized)
		return
	}
	w.Write([]byte(`{"ok":true}`))
}

// writeTokens writes a token file at path holding access and refresh, 0600.
func writeTokens(t *testing.T, path, access, refresh string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(`{"access_token":"`+access+`","refresh_token":"`+refresh+`"}`), 0o600))
}

// A failed save after a successful refresh used to fail the requests that
// waited for it, as if the refresh had failed (and the session could be
// reported expired). The refresh worked: the requests are answered with
// the new token, and the exit status (1) and stderr name the token file
// that lacks it. The token file is made immutable, so the temporary file
// beside it is written but cannot replace it.
func TestFetchFailedSaveAnswersTheLinesAndNamesTheTokenFile(t *testing.T) {
	api := newRotatingAPI(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.json")
	writeTokens(t, file, "a0", "r1") // a0 is rejected: the first request refreshes
	storetest.Immutable(t, file)

	r := courier(t, "/a\n/b\n/c\n", nil, "fetch", "--base-url", api.URL, "--summary=false",
		"--refresh-path", "/auth/refresh", "--token-file", file)
	assert.Equal(t, exitFailed, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 3)
	for _, l := range out {
		assert.Nil(t, l.Error, "line %d is answered with the new token", l.Line)
		assert.Equal(t, 200, l.Status)
	}
	assert.Contains(t, r.stderr, "the latest tokens are NOT saved in --token-file "+file)
	assert.NotContains(t, r.stderr, "session expired")
	api.mu.Lock()
	assert.Equal(t, []string{"r1"}, api.refreshes, "one refresh")
	api.mu.Unlock()
}

// A symlinked --token-file used to be replaced by a regular file on the
// first save: the link's target kept the rotated-away refresh token, and
// a second courier on the target's path sent it again. The save now goes
// to the target; the link stays a link, and the second process uses the
// new tokens without a refresh.
func TestFetchSymlinkedTokenFileIsWrittenThrough(t *testing.T) {
	api := newRotatingAPI(t)
	real := filepath.Join(t.TempDir(), "real.json")
	writeTokens(t, real, "a0", "r1")
	link := filepath.Join(t.TempDir(), "tokens.json")
	require.NoError(t, os.Symlink(real, link))

	args := []string{"fetch", "--base-url", api.URL, "--summary=false", "--refresh-path", "/auth/refresh"}
	r := courier(t, "/a\n", nil, append(args, "--token-file", link)...)
	require.Equal(t, 0, r.code, r.stderr)
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	assert.NotZero(t, fi.Mode()&os.ModeSymlink, "the link is still a link")
	b, err := os.ReadFile(real)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"refresh_token":"r2"`, "the target holds the rotated tokens")

	r = courier(t, "/b\n", nil, append(args, "--token-file", real)...)
	require.Equal(t, 0, r.code, r.stderr)
	api.mu.Lock()
	defer api.mu.Unlock()
	assert.Equal(t, []string{"r1"}, api.refreshes, "no refresh token was sent twice")
}

// A --token-file in a directory that cannot be written used to let the
// refresh go out, and the rotated token was lost with the failed save.
// Now no refresh is sent, and the line's error names the directory.
func TestFetchTokenFileInAReadOnlyDirectorySendsNoRefresh(t *testing.T) {
	api := newRotatingAPI(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.json")
	writeTokens(t, file, "a0", "r1")
	require.NoError(t, os.WriteFile(file+".lock", nil, 0o600)) // as a run before this one left it
	storetest.ReadOnlyDir(t, dir)

	r := courier(t, "/a\n", nil, "fetch", "--base-url", api.URL, "--summary=false",
		"--refresh-path", "/auth/refresh", "--token-file", file)
	assert.Equal(t, exitFailed, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 1)
	require.NotNil(t, out[0].Error)
	assert.Contains(t, *out[0].Error, "cannot write in its directory "+dir)
	api.mu.Lock()
	defer api.mu.Unlock()
	assert.Empty(t, api.refreshes, "no refresh was sent")
}

// --resume-failed replaces --out with its rewrite; a symlinked --out used
// to become a regular file. The rewrite is made beside the link's target
// and renamed onto it.
func TestFetchResumeFailedKeepsASymlinkedOut(t *testing.T) {
	api := startCountingAPI(t, demo.Config{FlakyPercent: 100})
	env := tokenEnv(api.Login())
	real := filepath.Join(t.TempDir(), "results.jsonl")
	link := filepath.Join(t.TempDir(), "out.jsonl")
	require.NoError(t, os.Symlink(real, link))
	input := "/items/1\n/flaky/2\n/items/3\n"
	args := []string{"fetch", "--base-url", api.URL, "--max-attempts", "1", "--out", link}
	r := courier(t, input, env, append(args, "--resume")...)
	require.Equal(t, 1, r.code, r.stderr)
	r = courier(t, input, env, append(args, "--resume-failed")...)
	require.Equal(t, 0, r.code, r.stderr)
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	assert.NotZero(t, fi.Mode()&os.ModeSymlink, "--out is still a link")
	requireWholeBatch(t, real, 3)
	assert.NoFileExists(t, real+".resume")
}

// A --token-file locked by another live process (a courier stopped with
// Ctrl-Z mid-refresh, any flock holder) used to stall fetch with no word.
// Now fetch says, once, which lock file it waits for and how long at most;
// once the holder lets go, the refresh goes on. (The bound itself, and the
// error naming the lock file, are pinned in the engine's tests.)
func TestFetchSaysWhichLockFileItWaitsFor(t *testing.T) {
	api := newRotatingAPI(t)
	file := filepath.Join(t.TempDir(), "tokens.json")
	writeTokens(t, file, "a0", "r1")
	release := storetest.HoldFlock(t, file+".lock")

	r := startCourier(t, nil, "fetch", "--base-url", api.URL, "--summary=false", "--timeout", "5s",
		"--refresh-path", "/auth/refresh", "--token-file", file)
	_, err := io.WriteString(r.stdin, "/a\n")
	require.NoError(t, err)
	require.NoError(t, r.stdin.Close())
	waiting := "waiting for the lock file " + file + ".lock of --token-file " + file + ", held by another process (at most 20s)"
	require.Eventually(t, func() bool { return strings.Contains(r.stderr.String(), waiting) },
		30*time.Second, 5*time.Millisecond, "fetch says which lock it waits for")
	api.mu.Lock()
	assert.Empty(t, api.refreshes, "no refresh while another holds the lock")
	api.mu.Unlock()
	release()

	l := r.line(t)
	assert.Nil(t, l.Error, "the refresh went on once the lock was free")
	require.NoError(t, r.cmd.Wait(), r.stderr.String())
	assert.Equal(t, 1, strings.Count(r.stderr.String(), "waiting for the lock file"), "said once, not a flood")
}

// A token file others could read was used without a word until its first
// write made it 0600. fetch now warns at start, naming the file and its
// mode; an owner-only file gets no warning.
func TestFetchWarnsOfATokenFileOthersCanRead(t *testing.T) {
	api := newRotatingAPI(t)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o600} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "tokens.json")
			api.mu.Lock()
			n := api.n
			api.mu.Unlock()
			writeTokens(t, file, fmt.Sprint("a", n), fmt.Sprint("r", n)) // valid: no refresh, no write
			require.NoError(t, os.Chmod(file, mode))
			r := courier(t, "/a\n", nil, "fetch", "--base-url", api.URL, "--summary=false",
				"--refresh-path", "/auth/refresh", "--token-file", file)
			require.Equal(t, 0, r.code, r.stderr)
			warning := fmt.Sprintf("warning: --token-file %s has mode %04o", file, mode)
			if mode == 0o600 {
				assert.NotContains(t, r.stderr, "warning")
			} else {
				assert.Contains(t, r.stderr, warning)
			}
		})
	}
}
