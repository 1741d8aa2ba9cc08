package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
)

// countingAPI is the demo API behind a handler that counts what reached it.
type countingAPI struct {
	*demo.Server
	URL string

	mu   sync.Mutex     // protects gets
	gets map[string]int // GET path -> times asked

	requests  atomic.Int64
	onRequest atomic.Pointer[func(n int64)] // called with each request's number
}

func startCountingAPI(t *testing.T, cfg demo.Config) *countingAPI {
	api := &countingAPI{Server: demo.New(cfg), gets: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := api.requests.Add(1)
		if f := api.onRequest.Load(); f != nil {
			(*f)(n)
		}
		if r.Method == http.MethodGet {
			api.mu.Lock()
			api.gets[r.URL.Path]++
			api.mu.Unlock()
		}
		api.Server.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	api.URL = srv.URL
	return api
}

// duplicateGETs is how many GETs repeated a path already asked for.
func (a *countingAPI) duplicateGETs() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	dup := 0
	for _, n := range a.gets {
		dup += n - 1
	}
	return dup
}

// mixedBatch is n lines: GETs of distinct items, every third line a POST.
func mixedBatch(n int) (input string, posts int) {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i%3 == 0 {
			fmt.Fprintf(&b, `{"id":%d,"method":"POST","path":"/items","json":{"line":%d}}`+"\n", i, i)
			posts++
		} else {
			fmt.Fprintf(&b, "/items/%d\n", i)
		}
	}
	return b.String(), posts
}

// readResults reads an output file and checks it holds lines 1..n once
// each, in order, all answered with a 2xx.
func requireWholeBatch(t *testing.T, path string, n int) []outLine {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	out := parseOutput(t, string(data))
	require.Len(t, out, n)
	for i, l := range out {
		require.Equal(t, i+1, l.Line, "output line %d", i+1)
		require.Nil(t, l.Error, "line %d", l.Line)
	}
	return out
}

func TestFetchResumeAfterKill9FetchesEachLineOnce(t *testing.T) {
	const lines, concurrency = 5000, 8
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	dir := t.TempDir()
	inPath, out := filepath.Join(dir, "batch.txt"), filepath.Join(dir, "results.jsonl")
	input, posts := mixedBatch(lines)
	require.NoError(t, os.WriteFile(inPath, []byte(input), 0o600))
	args := []string{"fetch", "--base-url", api.URL, "--resume", "--idempotency-keys", "--out", out,
		"--concurrency", fmt.Sprint(concurrency), inPath}

	// The first run dies by SIGKILL when the server takes a random request.
	killAt := int64(500 + rand.IntN(lines-1000))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, courierBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	require.NoError(t, cmd.Start())
	kill := func(n int64) {
		if n == killAt {
			_ = cmd.Process.Kill()
		}
	}
	api.onRequest.Store(&kill)
	err := cmd.Wait()
	api.onRequest.Store(nil)
	require.Error(t, err, "the first run was killed")
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	written := bytes.Count(data, []byte("\n"))
	t.Logf("killed at request %d with %d lines written", killAt, written)
	require.Less(t, written, lines, "the kill came mid-run")

	r := courier(t, "", env, args...)
	require.Equal(t, 0, r.code, r.stderr)
	requireWholeBatch(t, out, lines)
	assert.LessOrEqual(t, api.duplicateGETs(), concurrency, "only lines in the window are fetched again")
	assert.EqualValues(t, posts, api.Stats().Creates, "every POST applied once")
	assert.Contains(t, r.stderr, fmt.Sprintf("kept        %d answered before", written))
}

func TestFetchResumeCutsATornLastLine(t *testing.T) {
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	dir := t.TempDir()
	out := filepath.Join(dir, "results.jsonl")
	input, _ := mixedBatch(30)
	args := []string{"fetch", "--base-url", api.URL, "--resume", "--idempotency-keys", "--out", out}
	r := courier(t, input, env, args...)
	require.Equal(t, 0, r.code, r.stderr)
	data, err := os.ReadFile(out)
	require.NoError(t, err)

	// Keep 20 lines and half of the 21st, as a crash mid-write would.
	cut := 0
	for range 20 {
		cut += bytes.IndexByte(data[cut:], '\n') + 1
	}
	cut += 25
	require.NoError(t, os.WriteFile(out, data[:cut], 0o600))
	r = courier(t, input, env, args...)
	require.Equal(t, 0, r.code, r.stderr)
	requireWholeBatch(t, out, 30)
	assert.Equal(t, 6, api.duplicateGETs(), "the GETs past the cut (lines 22-29) were fetched again, no more")
	assert.EqualValues(t, 10, api.Stats().Creates, "the POSTs past the cut were replayed, not applied again")
}

func TestFetchResumeRefusesAChangedInput(t *testing.T) {
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	out := filepath.Join(t.TempDir(), "results.jsonl")
	input := "/items/1\n/items/2\n/items/3\n/items/4\n"
	args := []string{"fetch", "--base-url", api.URL, "--resume", "--out", out}
	r := courier(t, input, env, args...)
	require.Equal(t, 0, r.code, r.stderr)
	before, err := os.ReadFile(out)
	require.NoError(t, err)
	sent := api.requests.Load()

	for _, tc := range []struct{ name, input, want string }{
		{"a line edited", "/items/1\n/items/2\n/items/33\n/items/4\n/items/5\n", "input line 3 does not match its answer"},
		{"a line blanked", "/items/1\n\n/items/3\n/items/4\n/items/5\n", "input line 2 is answered in the checkpoint but is now blank"},
		{"lines dropped", "/items/1\n/items/2\n", "input line 3 is answered in the checkpoint but missing from the input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := courier(t, tc.input, env, args...)
			assert.Equal(t, 2, r.code, r.stderr)
			assert.Contains(t, r.stderr, tc.want)
			after, err := os.ReadFile(out)
			require.NoError(t, err)
			assert.Equal(t, string(before), string(after), "the checkpoint is left alone")
			assert.Equal(t, sent, api.requests.Load(), "nothing is fetched")
		})
	}

	require.NoError(t, os.WriteFile(out, []byte(`{"line":1,"status":200}`+"\n"), 0o600))
	r = courier(t, input, env, args...)
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, `line 1 has no "hash"`)

	r = courier(t, input, env, "fetch", "--base-url", api.URL, "--resume")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--resume needs --out FILE")
}

// TestFetchResumeLeavesAFileThatIsNotACheckpointAlone pins that --resume
// cuts a torn last line only after a valid checkpoint line: a file of
// another kind, with or without a trailing newline, is refused and kept
// byte for byte.
func TestFetchResumeLeavesAFileThatIsNotACheckpointAlone(t *testing.T) {
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	input := "/items/1\n/items/2\n"
	for _, tc := range []struct{ name, content, want string }{
		{"text without a newline", "notes I meant to keep", "is not a checkpoint written by fetch --resume"},
		{"a result line without a newline", `{"line":1,"status":200}`, "is not a checkpoint written by fetch --resume"},
		{"a JSON object without a newline", `{"hash":`, "is not a checkpoint written by fetch --resume"},
		{"text lines", "first\nsecond\nthird", "line 1 is not a result line"},
	} {
		for _, flag := range []string{"--resume", "--resume-failed"} {
			t.Run(tc.name+" "+flag, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "results.jsonl")
				require.NoError(t, os.WriteFile(out, []byte(tc.content), 0o600))
				sent := api.requests.Load()
				r := courier(t, input, env, "fetch", "--base-url", api.URL, flag, "--out", out)
				assert.Equal(t, 2, r.code, r.stderr)
				assert.Contains(t, r.stderr, out)
				assert.Contains(t, r.stderr, tc.want)
				after, err := os.ReadFile(out)
				require.NoError(t, err)
				assert.Equal(t, tc.content, string(after), "the file is left byte for byte")
				assert.Equal(t, sent, api.requests.Load(), "nothing is fetched")
				assert.NoFileExists(t, out+".resume")
			})
		}
	}
}

// TestFetchResumeNamesTheLineTheOutputFileLost pins the message for a
// checkpoint with a line gone from its middle: the output file lost it,
// the input did not change.
func TestFetchResumeNamesTheLineTheOutputFileLost(t *testing.T) {
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	out := filepath.Join(t.TempDir(), "results.jsonl")
	input := "/items/1\n/items/2\n/items/3\n/items/4\n/items/5\n"
	args := []string{"fetch", "--base-url", api.URL, "--resume", "--out", out}
	r := courier(t, input, env, args...)
	require.Equal(t, 0, r.code, r.stderr)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	lines := strings.SplitAfter(string(data), "\n")
	damaged := lines[0] + lines[1] + lines[3] + lines[4]
	require.NoError(t, os.WriteFile(out, []byte(damaged), 0o600))
	sent := api.requests.Load()

	r = courier(t, input, env, args...)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "the output file is missing line 3")
	assert.NotContains(t, r.stderr, "the input changed")
	after, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, damaged, string(after), "the checkpoint is left alone")
	assert.Equal(t, sent, api.requests.Load(), "nothing is fetched")
}

func TestFetchResumeFailedFetchesFailuresAgainInPlace(t *testing.T) {
	// Every /flaky id fails its first attempt; with one attempt per run,
	// the first run fails them and a second run gets them.
	api := startCountingAPI(t, demo.Config{FlakyPercent: 100})
	env := tokenEnv(api.Login())
	out := filepath.Join(t.TempDir(), "results.jsonl")
	var b strings.Builder
	for i := 1; i <= 12; i++ {
		if i%4 == 0 {
			fmt.Fprintf(&b, "/flaky/%d\n", i)
		} else {
			fmt.Fprintf(&b, "/items/%d\n", i)
		}
	}
	input := b.String()
	args := []string{"fetch", "--base-url", api.URL, "--max-attempts", "1", "--out", out}
	r := courier(t, input, env, append(args, "--resume")...)
	require.Equal(t, 1, r.code, r.stderr)

	r = courier(t, input, env, append(args, "--resume")...)
	assert.Equal(t, 1, r.code, "the stored failures still count")
	assert.Contains(t, r.stderr, "kept        12 answered before (3 failed)")
	assert.Zero(t, api.duplicateGETs(), "--resume alone fetches nothing again")

	r = courier(t, input, env, append(args, "--resume-failed")...)
	require.Equal(t, 0, r.code, r.stderr)
	requireWholeBatch(t, out, 12)
	assert.Equal(t, 3, api.duplicateGETs(), "only the failed lines were fetched again")
	assert.NoFileExists(t, out+".resume")
}

func TestFetchResumeFinishesAnInterruptedRewrite(t *testing.T) {
	api := startCountingAPI(t, demo.Config{FlakyPercent: 100})
	env := tokenEnv(api.Login())
	out := filepath.Join(t.TempDir(), "results.jsonl")
	input := "/items/1\n/flaky/2\n/items/3\n/flaky/4\n/items/5\n"
	args := []string{"fetch", "--base-url", api.URL, "--max-attempts", "1", "--out", out}
	r := courier(t, input, env, append(args, "--resume")...)
	require.Equal(t, 1, r.code, r.stderr)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	// A --resume-failed run killed after writing two lines of its rewrite.
	first2 := data[:bytes.IndexByte(data, '\n')+1]
	first2 = append(first2, []byte(`{"line":2,"id":null,"method":"GET","path":"/flaky/2","status":200,"attempts":1,"duration_ms":1,"body":{"id":"2"},"hash":"`+lineHash("/flaky/2")+`"}`+"\n")...)
	require.NoError(t, os.WriteFile(out+".resume", first2, 0o600))

	r = courier(t, input, env, append(args, "--resume")...)
	assert.Equal(t, 1, r.code, "line 4's stored failure is kept without --resume-failed")
	assert.NoFileExists(t, out+".resume")
	data, err = os.ReadFile(out)
	require.NoError(t, err)
	got := parseOutput(t, string(data))
	require.Len(t, got, 5)
	for i, l := range got {
		assert.Equal(t, i+1, l.Line)
	}
	assert.Nil(t, got[1].Error, "line 2 comes from the rewrite")
	assert.NotNil(t, got[3].Error, "line 4 comes from the old file")
	assert.Zero(t, api.duplicateGETs(), "nothing was fetched again")
}

func TestFetchIdempotencyKeysApplyEachPOSTOnce(t *testing.T) {
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	input := `{"method":"POST","path":"/items","json":{"a":1}}` + "\n" +
		`{"method":"POST","path":"/items","json":{"a":1}}` + "\n" +
		`{"method":"POST","path":"/items","json":{"b":2},"headers":{"Idempotency-Key":"mine"}}` + "\n"
	args := []string{"fetch", "--base-url", api.URL, "--idempotency-keys"}
	r := courier(t, input, env, args...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.EqualValues(t, 3, api.Stats().Creates, "identical lines are different requests")

	r = courier(t, input, env, args...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.EqualValues(t, 3, api.Stats().Creates, "the same input again is replayed, not applied")

	r = courier(t, input, env, "fetch", "--base-url", api.URL)
	require.Equal(t, 0, r.code, r.stderr)
	assert.EqualValues(t, 5, api.Stats().Creates, "without keys both POSTs apply again; the line with its own key does not")

	r = courier(t, "# another batch\n"+input, env, args...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.EqualValues(t, 7, api.Stats().Creates, "another input is another batch")
}

// TestCheckpointReadingAgreesWithDecoding pins the fast path of resume's
// scan: it reads what full JSON decoding reads, or leaves the line to it.
func TestCheckpointReadingAgreesWithDecoding(t *testing.T) {
	h := lineHash("/items/1")
	for _, tc := range []struct {
		line       string
		wantLine   int
		wantFailed bool
	}{
		{`{"line":7,"id":null,"method":"GET","path":"/items/1","status":200,"attempts":1,"duration_ms":1,"body":{"id":"1"},"hash":"` + h + `"}`, 7, false},
		{`{"line":8,"id":null,"method":"GET","path":"/x","status":401,"attempts":1,"duration_ms":1,"body":null,"error":"401 \"hash\":","hash":"` + h + `"}`, 8, true},
		{`{"line":9,"id":null,"method":"GET","path":"/x","status":200,"attempts":1,"duration_ms":1,"body":{"error":"none"},"hash":"` + h + `"}`, 9, false},
		{`{"hash":"` + h + `","line":10}`, 10, false},
		{`{"line":11,"body":"ends like a hash","hash":"` + h + `"}`, 11, false},
	} {
		answers, end, err := readCheckpoint(strings.NewReader(tc.line+"\n"), "f")
		require.NoError(t, err, tc.line)
		require.Len(t, answers, 1)
		assert.Equal(t, tc.wantLine, answers[0].line, tc.line)
		assert.Equal(t, h, answers[0].hash, tc.line)
		assert.Equal(t, tc.wantFailed, answers[0].failed, tc.line)
		assert.EqualValues(t, len(tc.line)+1, end)
	}
	_, _, err := readCheckpoint(strings.NewReader(`{"line":1,"hash":"`+h+`"`+"\n"), "f")
	assert.ErrorContains(t, err, "f line 1 is not a result line")
}
