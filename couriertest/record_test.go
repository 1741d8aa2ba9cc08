package couriertest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/couriertest"
	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

const querySecret = "q-s3cr3t-value"

// session runs requests through transport: GETs that outlive two tokens,
// one with a secret in its query, and a POST whose JSON holds a password.
// It returns each answer's status and body, and the tokens the engine
// was given by refreshes.
func session(t *testing.T, baseURL string, auth engine.Auth, transport http.RoundTripper) ([]string, []string) {
	var mu sync.Mutex
	var tokens []string
	auth.OnTokenRefreshed = func(tk engine.Tokens) {
		mu.Lock()
		tokens = append(tokens, tk.AccessToken, tk.RefreshToken)
		mu.Unlock()
	}
	e, err := engine.New(engine.Config{BaseURL: baseURL, Auth: auth, HTTPClient: &http.Client{Transport: transport}})
	require.NoError(t, err)
	var answers []string
	reqs := []*requests.Request{
		requests.New("GET", "/items/1"),
		requests.New("GET", "/items/2", requests.WithQuery("api_key", querySecret)),
		requests.New("GET", "/items/3", requests.WithHeader("Cookie", "sid=cookie-s3cr3t")),
		requests.New("POST", "/items", requests.WithJSON(map[string]any{"name": "x", "password": "pw-s3cr3t"})),
		requests.New("GET", "/items?page=2"),
	}
	for _, r := range reqs {
		resp, err := e.Do(ctxTimeout(t), r)
		require.NoError(t, err, r.Path)
		answers = append(answers, strconv.Itoa(resp.Status)+" "+string(resp.Body))
	}
	require.NoError(t, e.Close())
	mu.Lock()
	defer mu.Unlock()
	return answers, tokens
}

// asWritten is answers as a recording keeps them: the password the
// server echoed is redacted.
func asWritten(answers []string) []string {
	out := make([]string, len(answers))
	for i, a := range answers {
		out[i] = strings.ReplaceAll(a, "pw-s3cr3t", couriertest.Redacted)
	}
	return out
}

// readAll returns the contents of every file in dir.
func readAll(t *testing.T, dir string) string {
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var all strings.Builder
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		all.Write(b)
	}
	return all.String()
}

// A session recorded against the server replays without it, answer for
// answer, though the replay starts from other tokens; and what was
// written holds no token, cookie, password or secret query value.
func TestRecordRedactsAndReplayAnswers(t *testing.T) {
	srv := couriertest.NewServer(couriertest.WithTokenUses(2))
	dir := t.TempDir()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	recorded, tokens := session(t, srv.URL, srv.Auth(), couriertest.Record(dir, tr))
	srv.Close()
	require.Len(t, tokens, 4, "two refreshes, each a new pair")
	assert.EqualValues(t, 2, srv.Stats().Refreshes)

	files := readAll(t, dir)
	assert.Contains(t, files, couriertest.Redacted)
	secrets := append([]string{srv.Tokens().AccessToken, srv.Tokens().RefreshToken, querySecret, "cookie-s3cr3t", "pw-s3cr3t"}, tokens...)
	for _, s := range secrets {
		assert.NotContains(t, files, s)
	}
	assert.Contains(t, files, `"sid=REDACTED"`, "a cookie keeps its name")
	assert.Contains(t, files, `Bearer REDACTED`, "a credential keeps its scheme")

	// The server is gone; the replay answers alone, to other tokens.
	auth := srv.Auth()
	auth.AccessToken, auth.RefreshToken = "another-access", "another-refresh"
	replayed, _ := session(t, srv.URL, auth, couriertest.Replay(dir))
	assert.Equal(t, asWritten(recorded), replayed)
}

// A request nothing was recorded for fails with an error naming its
// method and its URL, the query left out.
func TestReplayMissNamesTheRequest(t *testing.T) {
	srv := newServer(t)
	dir := t.TempDir()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	rec := &http.Client{Transport: couriertest.Record(dir, tr)}
	req, _ := http.NewRequest("GET", srv.URL+"/items/1?api_key="+querySecret, nil)
	req.Header.Set("Authorization", "Bearer "+srv.Tokens().AccessToken)
	resp, err := rec.Do(req)
	require.NoError(t, err)
	resp.Body.Close()

	rp := &http.Client{Transport: couriertest.Replay(dir)}
	for _, tc := range []struct {
		method, path string
		near         int
	}{
		{"GET", "/items/2?api_key=" + querySecret, 0},
		{"GET", "/items/1?page=" + querySecret, 1},
		{"DELETE", "/items/1", 0},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		_, err := rp.Do(req)
		require.Error(t, err, tc.path)
		var miss *couriertest.MissError
		require.ErrorAs(t, err, &miss)
		assert.Equal(t, tc.method, miss.Method)
		path, _, _ := strings.Cut(tc.path, "?")
		assert.Equal(t, srv.URL+path, miss.URL)
		assert.Equal(t, tc.near, miss.Near)
		assert.Contains(t, miss.Error(), tc.method+" "+srv.URL+path)
		assert.NotContains(t, miss.Error(), querySecret)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/items/1?api_key=any-other-key", nil)
	resp, err = rp.Do(req)
	require.NoError(t, err, "the redacted parameter takes no part in matching")
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
}

// A connection reset is recorded as an error and replayed as one; a
// body that is not UTF-8 survives the round trip.
func TestRecordKeepsErrorsAndBinaryBodies(t *testing.T) {
	srv := newServer(t, couriertest.WithFaults("/items/5", couriertest.Reset()))
	dir := t.TempDir()
	tr := &http.Transport{DisableKeepAlives: true} // no resend on a reused connection
	defer tr.CloseIdleConnections()
	rec := couriertest.Record(dir, tr)
	req, _ := http.NewRequest("GET", srv.URL+"/items/5", nil)
	_, err := rec.RoundTrip(req)
	require.Error(t, err)

	rp := couriertest.Replay(dir)
	req, _ = http.NewRequest("GET", srv.URL+"/items/5", nil)
	_, err = rp.RoundTrip(req)
	var replayed *couriertest.ReplayedError
	require.ErrorAs(t, err, &replayed)
	assert.NotEmpty(t, replayed.Msg)

	bin := []byte{0xff, 0xfe, 0, 1, 2}
	up := httpServer(t, func(w http.ResponseWriter, _ *http.Request) { w.Write(bin) })
	req, _ = http.NewRequest("GET", up+"/blob", nil)
	resp, err := couriertest.Record(dir, tr).RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	req, _ = http.NewRequest("GET", up+"/blob", nil)
	resp, err = couriertest.Replay(dir).RoundTrip(req)
	require.NoError(t, err)
	got := make([]byte, 16)
	n, _ := resp.Body.Read(got)
	assert.Equal(t, bin, got[:n])
	assert.EqualValues(t, len(bin), resp.ContentLength)
}

// A directory that cannot be read fails every request with that error.
func TestReplayOfAMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "none")
	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/x", nil)
	_, err := couriertest.Replay(dir).RoundTrip(req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), dir)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

// httpServer serves h for the test and returns its URL.
func httpServer(t *testing.T, h http.HandlerFunc) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

// The OAuth 2.0 form refresh, with the client's secret in the form or as
// Basic credentials, is recorded with no secret in it and replays.
func TestRecordRedactsTheOAuthForm(t *testing.T) {
	for name, ca := range map[string]engine.ClientAuth{"post": engine.ClientAuthPost, "basic": engine.ClientAuthBasic} {
		t.Run(name, func(t *testing.T) {
			srv := couriertest.NewServer(couriertest.WithClient("app", "client-s3cr3t"), couriertest.WithTokenUses(1))
			dir := t.TempDir()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			auth := srv.Auth()
			auth.Refresh = &engine.RefreshConfig{Path: "/oauth/token", Form: true, ClientID: "app",
				ClientSecret: "client-s3cr3t", ClientAuth: ca}
			recorded, tokens := session(t, srv.URL, auth, couriertest.Record(dir, tr))
			srv.Close()
			require.NotEmpty(t, tokens)
			files := readAll(t, dir)
			for _, s := range append([]string{"client-s3cr3t", srv.Tokens().RefreshToken}, tokens...) {
				assert.NotContains(t, files, s)
			}
			assert.Contains(t, files, "grant_type=refresh_token")
			auth.AccessToken, auth.RefreshToken = "another-access", "another-refresh"
			replayed, _ := session(t, srv.URL, auth, couriertest.Replay(dir))
			assert.Equal(t, asWritten(recorded), replayed)
		})
	}
}

// Headers and fields named by the options are redacted too, and the
// replay, given the same options, matches whatever their values.
func TestRecordRedactsWhatTheOptionsName(t *testing.T) {
	up := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Session", "hdr-s3cr3t-back")
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"sig":"sig-s3cr3t","n":1}`))
	})
	dir := t.TempDir()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	opts := []couriertest.RedactOption{couriertest.RedactHeaders("x-session"), couriertest.RedactFields("SIG")}
	req, _ := http.NewRequest("GET", up+"/x?sig=query-s3cr3t&page=2", nil)
	req.Header.Set("X-Session", "hdr-s3cr3t")
	resp, err := couriertest.Record(dir, tr, opts...).RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	files := readAll(t, dir)
	for _, s := range []string{"hdr-s3cr3t", "hdr-s3cr3t-back", "sig-s3cr3t", "query-s3cr3t"} {
		assert.NotContains(t, files, s)
	}
	assert.Contains(t, files, `sig=REDACTED\u0026page=2`, "the other parameters stay, in order")

	req, _ = http.NewRequest("GET", up+"/x?sig=another&page=2", nil)
	resp, err = couriertest.Replay(dir, opts...).RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	_, err = couriertest.Replay(dir).RoundTrip(req)
	require.Error(t, err, "without the options the query is compared whole")
}

// Many requests replay at once, each getting its own answer.
func TestReplayUnderConcurrency(t *testing.T) {
	srv := couriertest.NewServer()
	dir := t.TempDir()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	const n = 30
	run := func(transport http.RoundTripper) []string {
		e, err := engine.New(engine.Config{BaseURL: srv.URL, Auth: srv.Auth(), HTTPClient: &http.Client{Transport: transport}})
		require.NoError(t, err)
		defer e.Close()
		ctx := ctxTimeout(t)
		var futures []*engine.Future
		for i := range n {
			futures = append(futures, e.Submit(ctx, requests.New("GET", "/items/"+strconv.Itoa(i))))
		}
		var out []string
		for _, f := range futures {
			resp, err := f.Await(ctx)
			require.NoError(t, err)
			out = append(out, string(resp.Body))
		}
		return out
	}
	live := run(couriertest.Record(dir, tr))
	srv.Close()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, ents, n, "one file per exchange")
	assert.Equal(t, live, run(couriertest.Replay(dir)))
}

// A JSON body with nothing to redact replays byte for byte, spaces and
// all; one with a token keeps the text around it.
func TestReplayKeepsBodiesAsTheyCame(t *testing.T) {
	bodies := map[string]string{
		"/plain": "{\n  \"q\": \"a<b & c\",\n  \"n\": 1.50\n}\n",
		"/token": `{"note":"a<b","access_token":"tok-s3cr3t","n":[1,2]}`,
	}
	up := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(bodies[r.URL.Path]))
	})
	dir := t.TempDir()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for path := range bodies {
		req, _ := http.NewRequest("GET", up+path, nil)
		resp, err := couriertest.Record(dir, tr).RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	want := map[string]string{
		"/plain": bodies["/plain"],
		"/token": `{"note":"a<b","access_token":"REDACTED","n":[1,2]}`,
	}
	for path, body := range want {
		req, _ := http.NewRequest("GET", up+path, nil)
		resp, err := couriertest.Replay(dir).RoundTrip(req)
		require.NoError(t, err)
		got, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, body, string(got), path)
	}
}

// A secret that happens to be a piece of a body's digest used to be
// scrubbed out of the digest too, and the exchange never matched again.
func TestRecordNeverScrubsTheDigest(t *testing.T) {
	up := httpServer(t, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	sum := sha256.Sum256([]byte("hello"))
	token := hex.EncodeToString(sum[:])[10:22]
	dir := t.TempDir()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	post := func(rt http.RoundTripper) error {
		req, _ := http.NewRequest("POST", up+"/echo", strings.NewReader("hello"))
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	require.NoError(t, post(couriertest.Record(dir, tr)))
	assert.NotContains(t, readAll(t, dir), "Bearer "+token)
	assert.NoError(t, post(couriertest.Replay(dir)))
}
