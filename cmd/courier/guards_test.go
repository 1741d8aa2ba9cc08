package main

import (
	"bufio"
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
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFetchOutputIsValidJSONWhateverTheServerSends(t *testing.T) {
	bodies := map[string]string{
		"/binary":   "\xff\xfe\x00\x01PNG\x89",
		"/bad-json": `{"name":"caf` + "\xe9" + `"}`, // Latin-1, valid to json.Valid
		"/text":     "plain text",
		"/json":     `{"a":1}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(bodies[r.URL.Path]))
	}))
	defer srv.Close()
	input := "/binary\n/bad-json\n/text\n/json\n" + `{"id":"` + "\xff" + `","path":"/json"}` + "\n"
	r := courier(t, input, nil, "fetch", "--base-url", srv.URL)
	assert.Equal(t, 1, r.code, r.stderr)

	var lines []map[string]json.RawMessage
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		b := sc.Bytes()
		require.True(t, utf8.Valid(b) && json.Valid(b), "output line %q is not valid JSON", b)
		var l map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(b, &l))
		lines = append(lines, l)
	}
	require.Len(t, lines, 5)
	for i, path := range []string{"/binary", "/bad-json"} {
		var raw []byte
		require.NoError(t, json.Unmarshal(lines[i]["body_base64"], &raw), "line %d has body_base64", i+1)
		assert.Equal(t, bodies[path], string(raw), "the bytes survive")
		assert.Equal(t, "null", string(lines[i]["body"]))
	}
	assert.Equal(t, `"plain text"`, string(lines[2]["body"]))
	assert.Equal(t, `{"a":1}`, string(lines[3]["body"]))
	assert.NotContains(t, lines[2], "body_base64")
	assert.Contains(t, string(lines[4]["error"]), "line 5: invalid JSON: not valid UTF-8")
}

func TestFetchOutNamingAnInputIsAUsageError(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "requests.txt")
	const content = "/items/1\n/items/2\n"
	require.NoError(t, os.WriteFile(in, []byte(content), 0o600))
	tokens := filepath.Join(dir, "tokens.json")
	require.NoError(t, os.WriteFile(tokens, []byte(`{"access_token":"a","refresh_token":"r"}`), 0o600))
	require.NoError(t, os.Symlink(in, filepath.Join(dir, "link")))
	require.NoError(t, os.Link(in, filepath.Join(dir, "hard")))
	base := []string{"fetch", "--base-url", "http://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"same name", []string{"--out", in, in}, "is the input file"},
		{"through a symlink", []string{"--out", filepath.Join(dir, "link"), in}, "is the input file"},
		{"a hard link", []string{"--out", filepath.Join(dir, "hard"), in}, "is the input file"},
		{"with --resume", []string{"--resume", "--out", in, in}, "is the input file"},
		{"the token file", []string{"--token-file", tokens, "--out", tokens, in}, "is the --token-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := courier(t, "", nil, append(base, tc.args...)...)
			assert.Equal(t, 2, r.code, r.stderr)
			assert.Contains(t, r.stderr, "--out")
			assert.Contains(t, r.stderr, tc.want)
		})
	}
	t.Run("the file on stdin", func(t *testing.T) {
		f, err := os.Open(in)
		require.NoError(t, err)
		defer f.Close()
		cmd := exec.Command(courierBin, append(base, "--out", in)...)
		cmd.Stdin = f
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err = cmd.Run()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, 2, ee.ExitCode())
		assert.Contains(t, stderr.String(), "is the file on stdin")
	})
	data, err := os.ReadFile(in)
	require.NoError(t, err)
	assert.Equal(t, content, string(data), "the input is intact")
}

func TestFetchNumericFlagsOutOfRangeAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--rate", "NaN"}, {"--rate", "Inf"}, {"--rate", "-1"}, {"--rate", "1e-300"},
		{"--concurrency", "2000000"}, {"--queue", "100000000"}, {"--burst", "-1"},
	} {
		r := courier(t, "/x\n", nil, append([]string{"fetch", "--base-url", "http://127.0.0.1:1"}, args...)...)
		assert.Equal(t, 2, r.code, "%v", args)
		assert.Contains(t, r.stderr, args[0], "%v: the error names the flag", args)
	}
}

// recorder is a server that answers 200 and keeps what it was sent.
type recorder struct {
	*httptest.Server
	mu     sync.Mutex
	seen   []string // path?query and auth header
	bodies []string
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.seen = append(rec.seen, r.URL.RequestURI()+" "+r.Header.Get("Authorization"))
		rec.bodies = append(rec.bodies, string(body))
		rec.mu.Unlock()
		w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (r *recorder) requests() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.seen, "\n")
}

func (r *recorder) sent() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.bodies, "\n")
}

func TestFetchBaseURLQueryIsKept(t *testing.T) {
	srv := newRecorder(t)
	r := courier(t, "/items\n/items?page=2\n", nil, "fetch", "--base-url", srv.URL+"/api?version=2")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, srv.requests(), "/api/items?version=2 ")
	assert.Contains(t, srv.requests(), "/api/items?page=2&version=2 ")
}

func TestFetchPathLeavingTheBaseURLIsALineError(t *testing.T) {
	srv := newRecorder(t)
	lines := []struct {
		text string
		ok   bool
	}{
		{"/../admin", false},
		{"/%2e%2e/admin", false},
		{"/%2E%2e/admin", false},
		{"/.%2E/admin", false},
		{"GET /a/../../admin", false},
		{`{"path":"/..%2fadmin"}`, false},
		{`{"path":"/a%2f..%2f..%2fadmin"}`, false},
		{srv.URL + "/admin", false},
		{srv.URL + "/api/v1/../admin", false},
		{"/a/../items", true},
		{"/items/..x", true},
		{srv.URL + "/api/v1/items", true},
	}
	var in strings.Builder
	for _, l := range lines {
		in.WriteString(l.text + "\n")
	}
	r := courier(t, in.String(), []string{"COURIER_TOKEN=secret-token"}, "fetch", "--base-url", srv.URL+"/api/v1")
	assert.Equal(t, 1, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, len(lines))
	for i, l := range lines {
		if l.ok {
			assert.Nil(t, out[i].Error, l.text)
			continue
		}
		if assert.NotNil(t, out[i].Error, l.text) {
			assert.Contains(t, *out[i].Error, fmt.Sprintf("line %d: ", i+1), l.text)
			assert.Contains(t, *out[i].Error, `outside the base URL's path "/api/v1"`, l.text)
		}
	}
	for _, req := range strings.Split(srv.requests(), "\n") {
		assert.True(t, strings.HasPrefix(req, "/api/v1/"), "the token went to %q", req)
	}
}

func TestFetchUploadsOnlyFromUploadRootAndNeverTheTokenFile(t *testing.T) {
	srv := newRecorder(t)
	top := t.TempDir()
	root := filepath.Join(top, "root")
	require.NoError(t, os.Mkdir(root, 0o700))
	write := func(path, content string) {
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	}
	write(filepath.Join(root, "ok.txt"), "fine to send")
	write(filepath.Join(top, "outside.txt"), "private outside")
	tokens := filepath.Join(root, "tokens.json")
	write(tokens, `{"access_token":"at-secret","refresh_token":"rt-secret"}`)
	require.NoError(t, os.Symlink(filepath.Join(top, "outside.txt"), filepath.Join(root, "escape")))
	require.NoError(t, os.Symlink(tokens, filepath.Join(root, "tk")))
	require.NoError(t, os.Link(tokens, filepath.Join(root, "tk-hard")))
	require.NoError(t, os.Symlink("ok.txt", filepath.Join(root, "alias.txt")))
	require.NoError(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600))

	lines := []struct {
		file string
		want string // "" when the upload goes
	}{
		{"ok.txt", ""},
		{filepath.Join(root, "ok.txt"), ""},
		{"alias.txt", ""},
		{filepath.Join(top, "outside.txt"), "is outside --upload-root"},
		{"../outside.txt", "is outside --upload-root"},
		{"escape", "is outside --upload-root"},
		{"/etc/passwd", "is outside --upload-root"},
		{"tokens.json", "is the --token-file"},
		{"tk", "is the --token-file"},
		{"tk-hard", "is the --token-file"},
		{"fifo", "not a regular file"},
		{"missing.txt", "no such file"},
	}
	var in strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&in, `{"path":"/upload","files":{"f":%q}}`+"\n", l.file)
	}
	r := courier(t, in.String(), nil, "fetch", "--base-url", srv.URL, "--upload-root", root, "--token-file", tokens)
	assert.Equal(t, 1, r.code, r.stderr)
	out := parseOutput(t, r.stdout)
	require.Len(t, out, len(lines))
	for i, l := range lines {
		if l.want == "" {
			assert.Nil(t, out[i].Error, l.file)
			continue
		}
		if assert.NotNil(t, out[i].Error, l.file) {
			assert.Contains(t, *out[i].Error, fmt.Sprintf("line %d: upload: file %q", i+1, l.file))
			assert.Contains(t, *out[i].Error, l.want, l.file)
		}
	}
	sent := srv.sent()
	assert.Equal(t, 3, strings.Count(sent, "fine to send"))
	for _, secret := range []string{"private outside", "at-secret", "rt-secret", "root:"} {
		assert.NotContains(t, sent, secret)
	}

	t.Run("an --upload-root that is not a directory", func(t *testing.T) {
		r := courier(t, "", nil, "fetch", "--base-url", srv.URL, "--upload-root", filepath.Join(root, "ok.txt"))
		assert.Equal(t, 2, r.code)
		assert.Contains(t, r.stderr, "--upload-root")
	})
}

// TestFetchHeaderFlagsStayOnTheBaseOrigin pins a bug: a key given with -H
// (the only way fetch sends a non-Bearer key) followed a redirect to
// another origin.
func TestFetchHeaderFlagsStayOnTheBaseOrigin(t *testing.T) {
	otherSeen := make(chan http.Header, 1)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherSeen <- r.Header.Clone()
		w.Write([]byte(`{}`))
	}))
	defer other.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/landing", http.StatusFound)
	}))
	defer api.Close()
	r := courier(t, "/x\n", nil, "fetch", "--base-url", api.URL, "-H", "X-Api-Key: k-secret", "-H", "X-Tenant-Secret: t-secret", "-H", "Accept: application/json")
	require.Equal(t, 0, r.code, r.stderr)
	h := <-otherSeen
	assert.Empty(t, h.Get("X-Api-Key"))
	assert.Empty(t, h.Get("X-Tenant-Secret"))
	assert.Empty(t, h.Get("Accept"), "every -H header is treated as a credential")
}
