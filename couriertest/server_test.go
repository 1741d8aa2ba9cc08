package couriertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/courier-go/courier/couriertest"
	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/fakeclock"
	"github.com/courier-go/courier/requests"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t *testing.T, opts ...couriertest.Option) *couriertest.Server {
	srv := couriertest.NewServer(opts...)
	t.Cleanup(srv.Close)
	return srv
}

// newEngine is an engine on srv's first session, with waits of a few
// milliseconds between retries.
func newEngine(t *testing.T, srv *couriertest.Server, edit ...func(*engine.Config)) *engine.Engine {
	cfg := engine.Config{BaseURL: srv.URL, Auth: srv.Auth(),
		Retry: engine.Retry{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}}
	for _, f := range edit {
		f(&cfg)
	}
	e, err := engine.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// client is a plain HTTP client whose connections close with the test.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// get sends GET path with token, and the headers given as pairs.
func get(t *testing.T, c *http.Client, rawURL, token string, kv ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", rawURL, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

// N requests that all meet an expired token make the engine refresh
// once, and every one of them succeeds with the new token.
func TestEngineRefreshesOnceForConcurrent401s(t *testing.T) {
	srv := newServer(t)
	e := newEngine(t, srv)
	srv.ExpireTokens()
	const n = 40
	ctx := ctxTimeout(t)
	var futures []*engine.Future
	for i := range n {
		futures = append(futures, e.Submit(ctx, requests.New("GET", "/items/"+strconv.Itoa(i))))
	}
	for i, f := range futures {
		resp, err := f.Await(ctx)
		require.NoError(t, err, "request %d", i)
		assert.Equal(t, 200, resp.Status)
	}
	st := srv.Stats()
	assert.EqualValues(t, 1, st.Refreshes, "one refresh for every 401")
	assert.GreaterOrEqual(t, st.Unauthorized, int64(1))
	assert.Zero(t, st.RefreshReuse)
	for i := range n {
		assert.LessOrEqual(t, st.Paths["/items/"+strconv.Itoa(i)], int64(2), "each sent at most twice")
	}
}

// A token that serves N requests makes a client refresh after every N.
func TestTokenExpiresAfterItsUses(t *testing.T) {
	srv := newServer(t, couriertest.WithTokenUses(3))
	e := newEngine(t, srv)
	for i := range 10 {
		_, err := e.Get(ctxTimeout(t), "/items/"+strconv.Itoa(i))
		require.NoError(t, err)
	}
	st := srv.Stats()
	assert.EqualValues(t, 3, st.Refreshes, "tokens for requests 1-3, 4-6, 7-9 and 10")
	assert.EqualValues(t, 3, st.Unauthorized)
}

// A token with a lifetime expires by the server's clock, on the second;
// a client refreshes and goes on.
func TestTokenExpiresAfterItsLifetime(t *testing.T) {
	clock := fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	srv := newServer(t, couriertest.WithTokenTTL(time.Minute), couriertest.WithClock(clock.Now))
	c := client(t)
	tk := srv.Tokens()
	assert.Equal(t, 60, tk.ExpiresIn)
	resp, _ := get(t, c, srv.URL+"/items/1", tk.AccessToken)
	assert.Equal(t, 200, resp.StatusCode)
	clock.Advance(time.Minute)
	resp, _ = get(t, c, srv.URL+"/items/1", tk.AccessToken)
	assert.Equal(t, 401, resp.StatusCode, "expired on the minute")
	assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "invalid_token")

	e := newEngine(t, srv)
	_, err := e.Get(ctxTimeout(t), "/items/1")
	require.NoError(t, err)
	assert.EqualValues(t, 1, srv.Stats().Refreshes)
}

// Presenting a refresh token that another client already rotated away
// revokes the session, as real servers do: both clients' sessions end.
func TestReusedRefreshTokenRevokesTheSession(t *testing.T) {
	srv := newServer(t)
	a, b := newEngine(t, srv), newEngine(t, srv) // one session, two holders
	ctx := ctxTimeout(t)
	srv.ExpireTokens()
	_, err := a.Get(ctx, "/items/1")
	require.NoError(t, err, "a refreshes and rotates the refresh token")
	_, err = b.Get(ctx, "/items/2")
	require.ErrorIs(t, err, errors.ErrSessionExpired, "b presents the spent refresh token")
	st := srv.Stats()
	assert.EqualValues(t, 1, st.Refreshes)
	assert.EqualValues(t, 1, st.RefreshReuse)

	_, err = a.Get(ctx, "/items/3")
	require.ErrorIs(t, err, errors.ErrSessionExpired, "the reuse revoked a's tokens too")
	assert.EqualValues(t, 1, srv.Stats().Refreshes, "a's refresh with its rotated token was refused")
	assert.EqualValues(t, 2, srv.Stats().RefreshRefused)
}

// Without rotation a refresh keeps the refresh token, which may be used
// again.
func TestWithoutRotationKeepsTheRefreshToken(t *testing.T) {
	srv := newServer(t, couriertest.WithoutRotation())
	a, b := newEngine(t, srv), newEngine(t, srv)
	srv.ExpireTokens()
	for _, e := range []*engine.Engine{a, b} {
		_, err := e.Get(ctxTimeout(t), "/items/1")
		require.NoError(t, err)
	}
	assert.EqualValues(t, 2, srv.Stats().Refreshes)
	assert.Zero(t, srv.Stats().RefreshReuse)
}

// Scripted faults reach the client in order, per path below a pattern
// that ends in a slash; the engine retries through them.
func TestScriptedFaults(t *testing.T) {
	srv := newServer(t,
		couriertest.WithFaults("/items/", couriertest.Status(502), couriertest.Reset()),
		couriertest.WithFaults("GET /items/7", couriertest.Pass(), couriertest.Status(500)))
	e := newEngine(t, srv)
	for _, id := range []string{"1", "2"} {
		resp, err := e.Get(ctxTimeout(t), "/items/"+id)
		require.NoError(t, err)
		// A 502, a reset, then the item; net/http itself resends a GET
		// whose reused connection was reset, so that may be one attempt.
		assert.Contains(t, []int{2, 3}, resp.Attempts)
		var it couriertest.Item
		require.NoError(t, json.Unmarshal(resp.Body, &it))
		assert.Equal(t, couriertest.ItemFor(id), it)
	}
	resp, err := e.Get(ctxTimeout(t), "/items/7")
	require.NoError(t, err)
	assert.Equal(t, 1, resp.Attempts, "the longer pattern wins, and passes first")
	st := srv.Stats()
	assert.EqualValues(t, 4, st.Faults)
	assert.EqualValues(t, 2, st.Resets)
	assert.EqualValues(t, 3, st.Paths["/items/1"])
	assert.EqualValues(t, 1, st.Paths["/items/7"])
}

// Retry-After comes in seconds or as a date, and a scripted fault uses
// up no token.
func TestScriptedRetryAfter(t *testing.T) {
	clock := fakeclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	srv := newServer(t, couriertest.WithClock(clock.Now), couriertest.WithTokenUses(1),
		couriertest.WithFaults("/a", couriertest.Unavailable(1500*time.Millisecond)),
		couriertest.WithFaults("/b", couriertest.TooManyRequests(0).WithRetryAfterDate(30*time.Second)))
	c := client(t)
	resp, _ := get(t, c, srv.URL+"/a", srv.Tokens().AccessToken)
	assert.Equal(t, 503, resp.StatusCode)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"), "rounded up")
	resp, _ = get(t, c, srv.URL+"/b", srv.Tokens().AccessToken)
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, "Fri, 02 Jan 2026 03:04:35 GMT", resp.Header.Get("Retry-After"))
	resp, _ = get(t, c, srv.URL+"/items/1", srv.Tokens().AccessToken)
	assert.Equal(t, 200, resp.StatusCode, "the token's one use was still there")
}

// A slow body meets a client's timeout mid-body; read patiently it is
// whole.
func TestSlowBody(t *testing.T) {
	srv := newServer(t, couriertest.WithFaults("/items/1", couriertest.SlowBody(80*time.Millisecond), couriertest.SlowBody(40*time.Millisecond)))
	c := client(t)
	c.Timeout = 10 * time.Millisecond
	req, _ := http.NewRequest("GET", srv.URL+"/items/1", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Tokens().AccessToken)
	resp, err := c.Do(req)
	if err == nil { // the header came in time; the body cannot
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	require.Error(t, err)
	c.Timeout = 0
	start := time.Now()
	resp, body := get(t, c, srv.URL+"/items/1", srv.Tokens().AccessToken)
	assert.Equal(t, 200, resp.StatusCode)
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)
	var it couriertest.Item
	require.NoError(t, json.Unmarshal(body, &it))
	assert.Equal(t, "1", it.ID)
}

// The quota travels in the IETF fields, which the engine reads; past it
// comes a 429 with Retry-After, and the next window has room again.
func TestRateLimitHeaders(t *testing.T) {
	clock := fakeclock.New(time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC))
	srv := newServer(t, couriertest.WithClock(clock.Now), couriertest.WithRateLimit(2, time.Minute))
	c := client(t)
	clock.Advance(15 * time.Second)
	for i, want := range []int64{1, 0} {
		resp, _ := get(t, c, srv.URL+"/items/1", srv.Tokens().AccessToken)
		require.Equal(t, 200, resp.StatusCode, i)
		q, ok := engine.ParseRateLimit(resp.Header, clock.Now())
		require.True(t, ok, resp.Header)
		assert.Equal(t, want, q.Remaining)
		assert.EqualValues(t, 2, q.Limit)
		assert.Equal(t, 45*time.Second, q.Reset)
	}
	resp, _ := get(t, c, srv.URL+"/items/1", srv.Tokens().AccessToken)
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, "45", resp.Header.Get("Retry-After"))
	resp, _ = get(t, c, srv.URL+"/healthz", "")
	assert.Equal(t, 200, resp.StatusCode, "not metered")
	clock.Advance(45 * time.Second)
	resp, _ = get(t, c, srv.URL+"/items/1", srv.Tokens().AccessToken)
	assert.Equal(t, 200, resp.StatusCode, "a new window")
	assert.EqualValues(t, 1, srv.Stats().RateLimited)
}

// Items carry an ETag; If-None-Match with it gets a 304 and no body.
func TestETags(t *testing.T) {
	srv := newServer(t, couriertest.WithMaxAge(time.Minute))
	c := client(t)
	tk := srv.Tokens().AccessToken
	resp, body := get(t, c, srv.URL+"/items/1", tk)
	etag := resp.Header.Get("ETag")
	require.Regexp(t, `^"[0-9a-f]{16}"$`, etag)
	assert.Equal(t, "max-age=60", resp.Header.Get("Cache-Control"))
	assert.NotEmpty(t, body)
	resp, body = get(t, c, srv.URL+"/items/1", tk, "If-None-Match", `"other", W/`+etag)
	assert.Equal(t, 304, resp.StatusCode)
	assert.Empty(t, body)
	assert.Equal(t, etag, resp.Header.Get("ETag"))
	resp, _ = get(t, c, srv.URL+"/items/2", tk, "If-None-Match", etag)
	assert.Equal(t, 200, resp.StatusCode, "another item, another tag")
	assert.EqualValues(t, 1, srv.Stats().NotModified)
}

var nextLink = regexp.MustCompile(`<([^>]+)>; rel="next"`)

// Every paging style walks the same items once, in order, and ends.
func TestPagination(t *testing.T) {
	srv := newServer(t, couriertest.WithItems(25, 10))
	c := client(t)
	tk := srv.Tokens().AccessToken
	for _, tc := range []struct {
		name  string
		first string
		pages int
	}{
		{"link with page numbers", "/items?page=1", 3},
		{"link with page size", "/items?per_page=7", 4},
		{"offset", "/items?offset=0&limit=10", 3},
		{"cursor", "/items?cursor=", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			u := srv.URL + tc.first
			pages := 0
			for u != "" {
				pages++
				require.LessOrEqual(t, pages, 10, "the pages end")
				resp, body := get(t, c, u, tk)
				require.Equal(t, 200, resp.StatusCode, string(body))
				var p couriertest.Page
				require.NoError(t, json.Unmarshal(body, &p))
				assert.Equal(t, 25, p.Total)
				assert.Equal(t, "25", resp.Header.Get("X-Total-Count"))
				for _, it := range p.Items {
					ids = append(ids, it.ID)
				}
				u = ""
				if m := nextLink.FindStringSubmatch(resp.Header.Get("Link")); m != nil {
					u = m[1]
				}
				if strings.Contains(tc.first, "cursor") {
					if p.NextCursor == "" {
						assert.Empty(t, u, "the last page has no next link")
					} else {
						assert.Equal(t, srv.URL+"/items?cursor="+url.QueryEscape(p.NextCursor), u)
					}
				}
			}
			assert.Equal(t, tc.pages, pages)
			want := make([]string, 25)
			for i := range want {
				want[i] = strconv.Itoa(i + 1)
			}
			assert.Equal(t, want, ids)
		})
	}
	resp, _ := get(t, c, srv.URL+"/items?page=2", tk)
	link := resp.Header.Get("Link")
	for _, rel := range []string{`page=3>; rel="next"`, `page=1>; rel="prev"`, `page=1>; rel="first"`, `page=3>; rel="last"`} {
		assert.Contains(t, link, rel)
	}
	resp, body := get(t, c, srv.URL+"/items?cursor=nonsense!", tk)
	assert.Equal(t, 400, resp.StatusCode)
	assert.Contains(t, string(body), "cursor")
}

// Logins over HTTP start sessions of their own; the client-credentials
// grant needs the configured client.
func TestLoginAndClientCredentials(t *testing.T) {
	srv := newServer(t, couriertest.WithLogin("ann", "pw"), couriertest.WithClient("app", "s3"))
	c := client(t)
	resp, err := c.Post(srv.URL+"/auth/login", "application/json", strings.NewReader(`{"username":"ann","password":"pw"}`))
	require.NoError(t, err)
	var tk couriertest.Tokens
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tk))
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.NotEqual(t, srv.Tokens().AccessToken, tk.AccessToken)
	r, _ := get(t, c, srv.URL+"/items/1", tk.AccessToken)
	assert.Equal(t, 200, r.StatusCode)

	resp, err = c.Post(srv.URL+"/auth/login", "application/json", strings.NewReader(`{"username":"ann","password":"no"}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 401, resp.StatusCode)

	for _, tc := range []struct {
		secret string
		want   int
	}{{"s3", 200}, {"wrong", 401}} {
		req, _ := http.NewRequest("POST", srv.URL+"/oauth/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("app", tc.secret)
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, tc.want, resp.StatusCode, tc.secret)
	}
	st := srv.Stats()
	assert.EqualValues(t, 1, st.Logins)
	assert.EqualValues(t, 1, st.ClientGrants)
}

// Revoke ends every session; the engine's refresh is refused and the
// session expires.
func TestRevokeEndsTheSession(t *testing.T) {
	srv := newServer(t)
	e := newEngine(t, srv)
	_, err := e.Get(ctxTimeout(t), "/items/1")
	require.NoError(t, err)
	srv.Revoke()
	_, err = e.Get(ctxTimeout(t), "/items/2")
	require.ErrorIs(t, err, errors.ErrSessionExpired)
	assert.EqualValues(t, 1, srv.Stats().RefreshRefused)
}

// The counters hold under concurrent clients.
func TestStatsUnderConcurrency(t *testing.T) {
	srv := newServer(t)
	c := client(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 5 {
				req, _ := http.NewRequest("GET", fmt.Sprintf("%s/items/%d", srv.URL, j), nil)
				req.Header.Set("Authorization", "Bearer "+srv.Tokens().AccessToken)
				resp, err := c.Do(req)
				if assert.NoError(t, err) {
					resp.Body.Close()
					assert.Equal(t, 200, resp.StatusCode, i)
				}
			}
		})
	}
	wg.Wait()
	st := srv.Stats()
	assert.EqualValues(t, 40, st.Requests)
	for j := range 5 {
		assert.EqualValues(t, 8, st.Paths["/items/"+strconv.Itoa(j)])
	}
}

// One option serves several APIs, each counting its own requests: a
// script runs afresh on each.
func TestAFaultOptionServesEachAPIAfresh(t *testing.T) {
	opt := couriertest.WithFaults("/items/1", couriertest.Status(500))
	c := client(t)
	for range 2 {
		srv := newServer(t, opt)
		resp, _ := get(t, c, srv.URL+"/items/1", srv.Tokens().AccessToken)
		assert.Equal(t, 500, resp.StatusCode)
	}
}

// Faults reach the token endpoint too: the engine retries a refresh that
// met a 503 and a reset, and refreshes once.
func TestFaultsOnTheRefreshEndpoint(t *testing.T) {
	srv := newServer(t, couriertest.WithFaults("POST /auth/refresh", couriertest.Status(503), couriertest.Reset()))
	e := newEngine(t, srv)
	srv.ExpireTokens()
	_, err := e.Get(ctxTimeout(t), "/items/1")
	require.NoError(t, err)
	st := srv.Stats()
	assert.EqualValues(t, 1, st.Refreshes)
	assert.EqualValues(t, 2, st.Faults)
	assert.EqualValues(t, 3, st.Paths["/auth/refresh"])
	assert.Zero(t, st.RefreshReuse, "the faults came before the token was spent")
}
