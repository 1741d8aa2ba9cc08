package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/demo"
)

func startDemo(t *testing.T, cfg demo.Config) *demo.Running {
	api, err := demo.Start("127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { api.Close() })
	return api
}

func tokenEnv(tk demo.Tokens) []string {
	return []string{"COURIER_TOKEN=" + tk.AccessToken, "COURIER_REFRESH_TOKEN=" + tk.RefreshToken}
}

func TestFetchHappyPath(t *testing.T) {
	api := startDemo(t, demo.Config{})
	input := strings.Join([]string{
		"/items/1",
		"",
		"# a comment",
		"GET /items/2",
		`{"id":"abc","path":"/items","query":{"page":3}}`,
		`{"id":7,"method":"POST","path":"/items","json":{"name":"w"},"headers":{"Idempotency-Key":"k1"}}`,
		"/healthz",
	}, "\n")
	r := courier(t, input, tokenEnv(api.Login()), "fetch", "--base-url", api.URL)
	require.Equal(t, 0, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 5)
	assert.Contains(t, r.stderr, "requests    5\nok          5\nfailed      0\n", "the summary goes to stderr")
	assert.Contains(t, r.stderr, "p99")
	assert.NotContains(t, r.stderr, "fetching", "no progress bar when stderr is not a terminal")

	r = courier(t, "/items/1\n", tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--progress")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "fetching", "--progress forces the bar")
	assert.Equal(t, []int{1, 4, 5, 6, 7}, []int{out[0].Line, out[1].Line, out[2].Line, out[3].Line, out[4].Line}, "skipped lines still count")
	assert.JSONEq(t, `{"id":"1","name":"item-1","price":`+priceOf(t, out[0].Body)+`}`, string(out[0].Body))
	assert.Equal(t, "null", string(out[0].ID))
	assert.Equal(t, "GET", out[1].Method)
	assert.Equal(t, "/items/2", out[1].Path)
	assert.Equal(t, `"abc"`, string(out[2].ID))
	var page struct{ Page int }
	require.NoError(t, json.Unmarshal(out[2].Body, &page))
	assert.Equal(t, 3, page.Page)
	assert.Equal(t, "7", string(out[3].ID))
	assert.Equal(t, 201, out[3].Status)
	for _, l := range out {
		assert.Nil(t, l.Error, "line %d", l.Line)
		assert.Equal(t, 1, l.Attempts)
		assert.Greater(t, l.DurationMS, 0.0)
	}
}

func priceOf(t *testing.T, body json.RawMessage) string {
	var v struct{ Price json.Number }
	require.NoError(t, json.Unmarshal(body, &v))
	return v.Price.String()
}

func TestFetchRefreshesOncePerExpiry(t *testing.T) {
	api := startDemo(t, demo.Config{AccessUses: 50})
	var in strings.Builder
	for i := range 300 {
		fmt.Fprintf(&in, "/items/%d\n", i)
	}
	r := courier(t, in.String(), tokenEnv(api.Login()), "fetch", "--base-url", api.URL,
		"--refresh-path", "/auth/refresh", "--concurrency", "8")
	require.Equal(t, 0, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 300)
	st := api.Stats()
	assert.EqualValues(t, 5, st.Refreshes, "300 requests at 50 per token: 5 refreshes")
	assert.Zero(t, st.RefreshReuse)
}

func TestFetchSessionExpiryExitsThreeAndAnswersEveryLine(t *testing.T) {
	api := startDemo(t, demo.Config{AccessUses: 10})
	tk := api.Login()
	api.Login() // another session: its refresh token is valid, ours gets revoked below
	var in strings.Builder
	for i := range 100 {
		fmt.Fprintf(&in, "/items/%d\n", i)
	}
	env := []string{"COURIER_TOKEN=" + tk.AccessToken, "COURIER_REFRESH_TOKEN=not-a-refresh-token"}
	r := courier(t, in.String(), env, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh", "--concurrency", "4")
	assert.Equal(t, 3, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 100, "every input line is answered")
	var ok, expired int
	for i, l := range out {
		assert.Equal(t, i+1, l.Line)
		switch {
		case l.Error == nil:
			ok++
		case strings.Contains(*l.Error, "session expired"):
			expired++
			assert.Contains(t, *l.Error, "invalid_grant (unknown refresh token)", "line %d: the endpoint's RFC 6749 error", l.Line)
		}
	}
	assert.Equal(t, 10, ok, "the token served its 10 requests")
	assert.Equal(t, 90, expired)
	assert.NotContains(t, r.stdout+r.stderr, tk.AccessToken, "tokens never reach the output")
}

func TestFetchMalformedLinesGetTheirOwnErrors(t *testing.T) {
	api := startDemo(t, demo.Config{})
	input := strings.Join([]string{
		"/items/1",
		`{"path": "/items/2"`,
		"GET /items/3 extra",
		`{"path":"/items/4","bogus":true}`,
		"items/5",
		`{"method":"GET"}`,
		`{"path":"/upload","files":{"f":["/no/such/file.png"]}}`,
		"/items/8",
	}, "\n")
	r := courier(t, input, tokenEnv(api.Login()), "fetch", "--base-url", api.URL)
	assert.Equal(t, 1, r.code)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 8)
	assert.Nil(t, out[0].Error)
	assert.Nil(t, out[7].Error)
	wants := map[int]string{
		2: "line 2: invalid JSON",
		3: "line 3: want /path, METHOD /path or a JSON object",
		4: `line 4: invalid JSON: json: unknown field "bogus"`,
		5: `line 5: path "items/5" must start with /`,
		6: `line 6: "path" is missing`,
		7: `line 7: upload: file "/no/such/file.png"`,
	}
	for n, want := range wants {
		require.NotNil(t, out[n-1].Error, "line %d", n)
		assert.Contains(t, *out[n-1].Error, want)
		assert.Equal(t, 0, out[n-1].Status)
	}
	assert.EqualValues(t, 2, api.Stats().Requests, "malformed lines send nothing")
}

func TestFetchUploadsFromJSONLines(t *testing.T) {
	api := startDemo(t, demo.Config{})
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.txt")
	require.NoError(t, os.WriteFile(a, []byte("\x89PNG\r\n\x1a\nimage bytes"), 0o600))
	require.NoError(t, os.WriteFile(b, []byte("hello"), 0o600))
	line := fmt.Sprintf(`{"id":"up","path":"/upload","files":{"image":[%q,%q]},"fields":{"note":"hi"}}`, a, b)
	r := courier(t, line, tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--upload-root", dir)
	require.Equal(t, 0, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 1)
	assert.Equal(t, "POST", out[0].Method, "a line with files is a POST by default")
	var ans demo.UploadAnswer
	require.NoError(t, json.Unmarshal(out[0].Body, &ans))
	require.Len(t, ans.Parts, 3)
	assert.Equal(t, "note", ans.Parts[0].Field)
	assert.Equal(t, "hi", ans.Parts[0].Value)
	assert.Equal(t, "a.png", ans.Parts[1].Filename)
	assert.Equal(t, "image/png", ans.Parts[1].ContentType)
	assert.Equal(t, sha("\x89PNG\r\n\x1a\nimage bytes"), ans.Parts[1].SHA256)
	assert.Equal(t, sha("hello"), ans.Parts[2].SHA256)
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestFetchKeepsInputOrderUnderConcurrency(t *testing.T) {
	api := startDemo(t, demo.Config{})
	var in strings.Builder
	for i := range 64 {
		// Early lines are the slowest.
		fmt.Fprintf(&in, `{"id":%d,"path":"/slow/%d","query":{"ms":%d}}`+"\n", i, i, 64-i)
	}
	r := courier(t, in.String(), tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--concurrency", "32", "--out", filepath.Join(t.TempDir(), "x"))
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout, "--out takes the results")

	out := filepath.Join(t.TempDir(), "results.jsonl")
	r = courier(t, in.String(), tokenEnv(api.Login()), "fetch", "--base-url", api.URL, "--concurrency", "32", "--out", out)
	require.Equal(t, 0, r.code, r.stderr)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	lines := parseOutput(t, string(data))
	require.Len(t, lines, 64)
	for i, l := range lines {
		assert.Equal(t, i+1, l.Line)
		assert.Equal(t, fmt.Sprint(i), string(l.ID))
	}
}

func TestFetchUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fetch"}, "--base-url is required"},
		{[]string{"fetch", "--base-url", "http://x", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"fetch", "--base-url", "ftp://x"}, "--base-url \"ftp://x\": want an http:// or https:// URL"},
		{[]string{"fetch", "--base-url", "http://x", "-H", "no colon"}, `--header "no colon"`},
		{[]string{"fetch", "--base-url", "http://x", "--refresh-path", "/r", "--refresh-body", "[1]"}, "--refresh-body: want a JSON object"},
		{[]string{"fetch", "--base-url", "http://x", "--client-auth", "magic", "--refresh-path", "/r"}, `--client-auth "magic"`},
		{[]string{"fetch", "--base-url", "http://x", "a", "b"}, "at most one input FILE"},
		{[]string{"fetch", "--base-url", "http://x", "--concurrency", "0"}, "--concurrency must be at least 1"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{nil, "Usage:"},
	} {
		r := courier(t, "", nil, tc.args...)
		assert.Equal(t, 2, r.code, "%v", tc.args)
		assert.Contains(t, r.stderr, tc.want, "%v", tc.args)
	}
}

func TestFetchTokenFileGetsRotatedTokens(t *testing.T) {
	api := startDemo(t, demo.Config{AccessUses: 3})
	tk := api.Login()
	file := filepath.Join(t.TempDir(), "tokens.json")
	require.NoError(t, os.WriteFile(file, []byte(fmt.Sprintf(`{"access_token":%q,"refresh_token":%q}`, tk.AccessToken, tk.RefreshToken)), 0o600))
	var in strings.Builder
	for i := range 10 {
		fmt.Fprintf(&in, "/items/%d\n", i)
	}
	r := courier(t, in.String(), nil, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh",
		"--token-file", file, "--concurrency", "1")
	require.Equal(t, 0, r.code, r.stderr+r.stdout)
	var saved struct{ AccessToken, RefreshToken string }
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &struct {
		A *string `json:"access_token"`
		R *string `json:"refresh_token"`
	}{&saved.AccessToken, &saved.RefreshToken}))
	assert.NotEqual(t, tk.RefreshToken, saved.RefreshToken, "the rotated refresh token was saved")

	// A second run with the saved file works: the old token would be a reuse.
	r = courier(t, "/items/1\n", nil, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh", "--token-file", file)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Zero(t, api.Stats().RefreshReuse)
}

func TestServeDemoAndFetchWalkthrough(t *testing.T) {
	// The README's walkthrough: serve-demo writes a token file, fetch uses it.
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.json")
	srv := startServeDemo(t, "--addr", "127.0.0.1:0", "--token-file", tokens, "--access-uses", "5")
	input := "/items/1\n/flaky/2\n/reset/3\nPOST /items\n"
	r := courier(t, input, nil, "fetch", "--base-url", srv, "--refresh-path", "/auth/refresh", "--token-file", tokens)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, 4)
	assert.Nil(t, out[0].Error)
	assert.Nil(t, out[1].Error, "a flaky answer is retried")
	assert.Nil(t, out[2].Error, "a reset GET is retried")
	require.NotNil(t, out[3].Error, "POST /items without a JSON body is refused by the API")
	assert.Equal(t, 400, out[3].Status)
	assert.Equal(t, 1, r.code)
}

var listenLine = regexp.MustCompile(`demo API on (http://[0-9.:]+)`)

func TestDemoCommandPrintsASummary(t *testing.T) {
	r := courier(t, "", nil, "demo", "--requests", "400", "--progress=false")
	require.Equal(t, 0, r.code, r.stderr)
	assert.NotContains(t, r.stderr, "demo ", "--progress=false hides the bar")
	for _, want := range []string{"requests    400", "ok          400", "failed      0", "refreshes", "dedup hits", "throughput", "p50", "p99"} {
		assert.Contains(t, r.stdout, want)
	}
	assert.Regexp(t, `retries\s+[1-9]`, r.stdout, "the flaky endpoints were retried")
	assert.Regexp(t, `holds\s+[1-9]`, r.stdout, "the demo runs with holds, as a user's engine does")
}

// TestFetchStreamsLineByLine proves fetch reads lazily and writes each
// result at once: every answer comes out while the input is still open, so
// an input of any length runs in bounded memory.
func TestFetchStreamsLineByLine(t *testing.T) {
	api := startDemo(t, demo.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, courierBin, "fetch", "--base-url", api.URL, "--summary=false")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tokenEnv(api.Login())...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	out := bufio.NewReader(stdout)
	for i := 1; i <= 3; i++ {
		_, err := fmt.Fprintf(stdin, "/items/%d\n", i)
		require.NoError(t, err)
		line, err := out.ReadString('\n')
		require.NoError(t, err, "result %d arrives while the input is still open", i)
		var l outLine
		require.NoError(t, json.Unmarshal([]byte(line), &l))
		assert.Equal(t, i, l.Line)
		assert.Nil(t, l.Error)
	}
	require.NoError(t, stdin.Close())
	require.NoError(t, cmd.Wait())
}

// TestFetchWritesADoneLineWhileTheNextIsInFlight: fetch holds the lines it
// writes between two waits in one buffer, and must flush it before it
// waits. Line 1's result reaches the output while line 2's request is
// still waiting for its answer; had fetch waited with line 1 in its
// buffer, the bubble would deadlock.
func TestFetchWritesADoneLineWhileTheNextIsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		client := &http.Client{Transport: engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path == "/slow" {
				select {
				case <-release:
				case <-r.Context().Done():
					return nil, r.Context().Err()
				}
			}
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Request: r,
				Body: io.NopCloser(strings.NewReader(`{"ok":true}`))}, nil
		})}
		e, err := engine.New(engine.Config{BaseURL: "http://api.test", HTTPClient: client, Workers: 4})
		require.NoError(t, err)
		defer e.Close()

		src := newInput(openInput("", strings.NewReader("/fast\n/slow\n/fast\n")), defaultMaxLine, &lineParser{})
		outR, outW := io.Pipe()
		var sum summary
		code := make(chan int, 1)
		go func() {
			c, _ := fetch(context.Background(), e, src, outW, 16, &progress{}, &sum)
			outW.Close()
			code <- c
		}()
		out := bufio.NewReader(outR)
		first, err := out.ReadString('\n')
		require.NoError(t, err)
		assert.Contains(t, first, `"line":1,`)
		close(release)
		rest, err := io.ReadAll(out)
		require.NoError(t, err)
		assert.Equal(t, 2, strings.Count(string(rest), "\n"))
		assert.Contains(t, string(rest), `"line":2,`)
		assert.Equal(t, exitOK, <-code)
		assert.EqualValues(t, 3, sum.ok)
	})
}
