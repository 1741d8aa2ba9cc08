package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// thief is a server on another origin that records whatever reaches it.
type thief struct {
	*httptest.Server
	mu   sync.Mutex
	hits []*http.Request
	body []string
}

func newThief(t *testing.T) *thief {
	th := &thief{}
	th.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		th.mu.Lock()
		th.hits = append(th.hits, r)
		th.body = append(th.body, string(b))
		th.mu.Unlock()
		w.Write([]byte(`{"access_token":"stolen","expires_in":3600}`))
	}))
	t.Cleanup(th.Close)
	return th
}

func (th *thief) requests() ([]*http.Request, []string) {
	th.mu.Lock()
	defer th.mu.Unlock()
	return append([]*http.Request(nil), th.hits...), append([]string(nil), th.body...)
}

// A refresh endpoint answering 307 or 308 to another origin used to get
// the refresh token (and the client secret, or Basic credentials) sent
// there, three times over. The refresh now fails at once and sends nothing
// there; the session goes on.
func TestRefreshNeverFollowsARedirectToAnotherOrigin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		auth   engine.ClientAuth
	}{
		{"307 with client_secret in the form", http.StatusTemporaryRedirect, engine.ClientAuthPost},
		{"308 with Basic client credentials", http.StatusPermanentRedirect, engine.ClientAuthBasic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := newThief(t)
			var refreshCalls atomic.Int64
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/token" {
					refreshCalls.Add(1)
					http.Redirect(w, r, th.URL+"/steal", tc.status)
					return
				}
				http.Error(w, "expired", http.StatusUnauthorized)
			}))
			defer api.Close()
			var expired atomic.Int64
			e := newEngine(t, engine.Config{BaseURL: api.URL, Retry: fastRetry(), Auth: engine.Auth{
				AccessToken: "old", RefreshToken: "the-refresh-token",
				Refresh: &engine.RefreshConfig{Path: "/token", Form: true, ClientID: "app",
					ClientSecret: "the-client-secret", ClientAuth: tc.auth},
				OnSessionExpired: func() { expired.Add(1) },
			}})
			_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
			require.ErrorIs(t, err, errors.ErrRefreshFailed)
			assert.NotErrorIs(t, err, errors.ErrSessionExpired, "a bad redirect is not a refused refresh token")
			assert.Contains(t, err.Error(), "another origin")
			hits, _ := th.requests()
			assert.Empty(t, hits, "nothing may be sent to the other origin")
			assert.EqualValues(t, 1, refreshCalls.Load(), "not retried")
			assert.Zero(t, expired.Load())
		})
	}
}

// A redirect within the refresh endpoint's origin is followed, body and
// credentials included.
func TestRefreshFollowsASameOriginRedirect(t *testing.T) {
	var got atomic.Value
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token":
			http.Redirect(w, r, "/oauth/token", http.StatusTemporaryRedirect)
		case "/oauth/token":
			require.NoError(t, r.ParseForm())
			got.Store(r.PostForm.Get("refresh_token"))
			w.Write([]byte(`{"access_token":"new"}`))
		default:
			if r.Header.Get("Authorization") != "Bearer new" {
				http.Error(w, "expired", http.StatusUnauthorized)
			}
		}
	}))
	defer api.Close()
	e := newEngine(t, engine.Config{BaseURL: api.URL, Auth: engine.Auth{
		AccessToken: "old", RefreshToken: "rt", Refresh: &engine.RefreshConfig{Path: "/token", Form: true}}})
	_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
	require.NoError(t, err)
	assert.Equal(t, "rt", got.Load())
}

// Credentials the caller set (an API key given with -H, a Cookie) used to
// follow a 302 to another origin. Like net/http does for Authorization
// across domains, every sensitive header is stripped when a redirect leaves
// the request's origin, and stays stripped if it comes back.
func TestCallerCredentialsAreStrippedOnCrossOriginRedirects(t *testing.T) {
	th := newThief(t)
	var sameMu sync.Mutex
	var same []http.Header
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, th.URL+"/land", http.StatusFound)
		case "/home":
			http.Redirect(w, r, "/land", http.StatusFound)
		case "/land":
			sameMu.Lock()
			same = append(same, r.Header.Clone())
			sameMu.Unlock()
		}
	}))
	defer api.Close()
	e := newEngine(t, engine.Config{BaseURL: api.URL,
		Headers:          http.Header{"X-Engine-Key": {"engine-secret"}},
		SensitiveHeaders: append(engine.DefaultSensitiveHeaders, "X-Engine-Key"),
		Auth:             engine.Auth{AccessToken: "the-token"}})
	ctx := ctxTimeout(t, 5*time.Second)
	opts := []requests.Option{
		requests.WithHeader("X-Api-Key", "k1"), requests.WithHeader("Api-Key", "k2"),
		requests.WithHeader("X-Auth-Token", "k3"), requests.WithHeader("Cookie", "session=k4"),
		requests.WithHeader("Proxy-Authorization", "Basic k5"),
		requests.WithSensitiveHeader("X-Custom-Credential", "k6"),
		requests.WithHeader("X-Trace", "kept"),
	}

	_, err := e.Get(ctx, "/away", opts...)
	require.NoError(t, err)
	hits, _ := th.requests()
	require.Len(t, hits, 1)
	for _, k := range []string{"Authorization", "X-Api-Key", "Api-Key", "X-Auth-Token", "Cookie",
		"Proxy-Authorization", "X-Custom-Credential", "X-Engine-Key"} {
		assert.Empty(t, hits[0].Header.Get(k), "%s reached another origin", k)
	}
	assert.Equal(t, "kept", hits[0].Header.Get("X-Trace"), "other headers follow the redirect")

	_, err = e.Get(ctx, "/home", opts...)
	require.NoError(t, err)
	sameMu.Lock()
	require.Len(t, same, 1)
	assert.Equal(t, "k1", same[0].Get("X-Api-Key"), "a same-origin redirect keeps them")
	assert.Equal(t, "k6", same[0].Get("X-Custom-Credential"))
	assert.Equal(t, "Bearer the-token", same[0].Get("Authorization"))
	sameMu.Unlock()

	// Through HTTPClient, whose own client follows the redirects.
	hreq, err := http.NewRequestWithContext(ctx, "GET", api.URL+"/away", nil)
	require.NoError(t, err)
	hreq.Header.Set("X-Api-Key", "k1")
	hreq.Header.Set("Cookie", "session=k4")
	hresp, err := e.HTTPClient().Do(hreq)
	require.NoError(t, err)
	hresp.Body.Close()
	hits, _ = th.requests()
	require.Len(t, hits, 2)
	assert.Empty(t, hits[1].Header.Get("X-Api-Key"), "HTTPClient: X-Api-Key reached another origin")
	assert.Empty(t, hits[1].Header.Get("Cookie"), "HTTPClient: Cookie reached another origin")
	assert.Empty(t, hits[1].Header.Get("Authorization"), "HTTPClient: the token reached another origin")

	// There and back again: the credentials do not come back with it.
	bounce := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, api.URL+"/land", http.StatusFound)
	}))
	defer bounce.Close()
	_, err = e.Get(ctx, bounce.URL+"/x", opts...)
	require.NoError(t, err)
	sameMu.Lock()
	require.Len(t, same, 2)
	assert.Empty(t, same[1].Get("X-Api-Key"))
	assert.Empty(t, same[1].Get("Cookie"))
	sameMu.Unlock()
}

// Two GETs that differ only in a credential the caller set used to share
// one upstream call, so one caller got the other's answer. Every credential
// the caller sets is part of the dedup key.
func TestDedupNeverMergesRequestsWithDifferentCredentials(t *testing.T) {
	for _, header := range []string{"Authorization", "Cookie", "Proxy-Authorization", "X-Api-Key", "X-Custom-Credential"} {
		t.Run(header, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				var calls atomic.Int64
				e := virtualEngine(t, engine.Config{HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
					calls.Add(1)
					<-release
					return answer(r, 200, r.Header.Get(header)), nil
				})})
				defer close(release)
				ctx := context.Background()
				opt := func(v string) requests.Option {
					if header == "X-Custom-Credential" {
						return requests.WithSensitiveHeader(header, v)
					}
					return requests.WithHeader(header, v)
				}
				alice := e.Submit(ctx, requests.New("GET", "/me", opt("alice")))
				synctest.Wait()
				require.EqualValues(t, 1, calls.Load(), "alice's call")
				bob := e.Submit(ctx, requests.New("GET", "/me", opt("bob")))
				alice2 := e.Submit(ctx, requests.New("GET", "/me", opt("alice")))
				synctest.Wait()
				require.EqualValues(t, 2, calls.Load(), "bob's call, and alice's second joined her first")
				release <- struct{}{}
				release <- struct{}{}
				for f, want := range map[*engine.Future]string{alice: "alice", bob: "bob", alice2: "alice"} {
					resp, err := f.Await(ctx)
					require.NoError(t, err)
					assert.Equal(t, want, string(resp.Body))
				}
				assert.EqualValues(t, 1, e.Stats().DedupHits, "the same caller's identical requests still merge")
			})
		})
	}
}

// captureLog returns a trace-level logger writing to a buffer.
func captureLog() (*zerolog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	l := zerolog.New(buf).Level(zerolog.TraceLevel)
	return &l, buf
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// closedURL returns the URL of a port nothing listens on.
func closedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

// At debug level the worker's attempt log used to print the transport
// error's full URL, ?api_key=... included, and a query in the refresh path
// reached the refresh error and its warn log. Queries and user info are
// redacted in every URL that reaches a log line or an error.
func TestQueryStringsAndUserInfoNeverReachLogsOrErrors(t *testing.T) {
	const secret = "s3cr3t-query-value"
	hijack := func(w http.ResponseWriter) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // no answer at all: a transport error
		}
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token", "/reset":
			hijack(w)
		case "/elsewhere":
			http.Redirect(w, r, closedURL(t)+"/x?api_key="+secret, http.StatusFound)
		default:
			http.Error(w, "expired", http.StatusUnauthorized)
		}
	}))
	defer api.Close()
	base := strings.Replace(api.URL, "http://", "http://user:"+secret+"@", 1)

	for _, tc := range []struct {
		name string
		cfg  func(*engine.Config)
		req  *requests.Request
	}{
		{"transport error", nil, requests.New("GET", "/reset", requests.WithQuery("api_key", secret))},
		{"connection refused", nil, requests.New("GET", closedURL(t)+"/x?api_key="+secret)},
		{"redirect to a dead host", nil, requests.New("GET", "/elsewhere")},
		{"refresh path with a query", func(c *engine.Config) {
			c.Auth = engine.Auth{AccessToken: "a", RefreshToken: "r",
				Refresh: &engine.RefreshConfig{Path: "/token?client_secret=" + secret}}
		}, requests.New("GET", "/needs-refresh")},
		{"middleware that wraps the error", func(c *engine.Config) {
			c.Middleware = []engine.Middleware{func(next http.RoundTripper) http.RoundTripper {
				return engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
					resp, err := next.RoundTrip(r)
					if err != nil {
						err = fmt.Errorf("middleware saw %s: %w", r.URL, err)
					}
					return resp, err
				})
			}}
		}, requests.New("GET", "/reset", requests.WithQuery("api_key", secret))},
		{"invalid path", nil, requests.New("GET", "/x%zz?api_key="+secret)},
		{"invalid method", nil, requests.New("GE T", "/x?api_key="+secret)},
		// A path naming a host without a scheme is refused, and its user
		// info used to be quoted in the error.
		{"invalid path: a host without a scheme", nil, requests.New("GET", "//user:"+secret+"@evil.test/x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, buf := captureLog()
			cfg := engine.Config{BaseURL: base, Logger: log, Retry: engine.Retry{MaxAttempts: 2, BaseDelay: time.Millisecond}}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			e := newEngine(t, cfg)
			_, err := e.Do(ctxTimeout(t, 5*time.Second), tc.req)
			require.Error(t, err)
			assert.NotContains(t, err.Error(), secret, "the error")
			require.NoError(t, e.Close()) // flushes the hooks' log lines
			assert.NotContains(t, buf.String(), secret, "the log")
			if !strings.HasPrefix(tc.name, "invalid") { // refused before anything runs
				assert.NotEmpty(t, buf.String(), "something was logged")
			}
		})
	}
}

// The same through HTTPClient: its attempts log no query either (the
// error the outer client returns quotes the caller's own URL, as net/http
// always does).
func TestQueryStringsNeverReachLogsThroughHTTPClient(t *testing.T) {
	const secret = "s3cr3t-query-value"
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	}))
	defer api.Close()
	log, buf := captureLog()
	e := newEngine(t, engine.Config{BaseURL: api.URL, Logger: log, Retry: engine.Retry{MaxAttempts: 2, BaseDelay: time.Millisecond}})
	req, err := http.NewRequestWithContext(ctxTimeout(t, 5*time.Second), "GET", api.URL+"/reset?api_key="+secret, nil)
	require.NoError(t, err)
	_, err = e.HTTPClient().Do(req)
	require.Error(t, err)
	require.NoError(t, e.Close())
	assert.NotEmpty(t, buf.String())
	assert.NotContains(t, buf.String(), secret)
}

// A refresh answer whose token holds CR, LF, NUL or other characters that
// are not a Bearer token's used to be accepted, and every later request
// failed. Such an answer is as unusable as one that does not parse: the
// session ends, and the token is never sent.
func TestRefreshAnswerWithAnInvalidTokenEndsTheSession(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
		ok           bool
	}{
		{"CR LF", `{"access_token":"abc\r\nX-Injected: 1"}`, false},
		{"NUL", `{"access_token":"abc\u0000def"}`, false},
		{"space", `{"access_token":"abc def"}`, false},
		{"non-ASCII", `{"access_token":"jeton-é"}`, false},
		{"padding in the middle", `{"access_token":"ab=cd"}`, false},
		{"refresh token with LF", `{"access_token":"good","refresh_token":"r\n"}`, false},
		{"every b64token character", `{"access_token":"aZ09-._~+/==","refresh_token":"any visible! chars"}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int64
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/token" {
					w.Write([]byte(tc.answer))
					return
				}
				if r.Header.Get("Authorization") == "Bearer old" {
					http.Error(w, "expired", http.StatusUnauthorized)
					return
				}
				sent.Add(1)
			}))
			defer api.Close()
			e := newEngine(t, engine.Config{BaseURL: api.URL, Auth: engine.Auth{
				AccessToken: "old", RefreshToken: "rt", Refresh: &engine.RefreshConfig{Path: "/token"}}})
			_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, errors.ErrSessionExpired)
			assert.Contains(t, err.Error(), "token")
			assert.NotContains(t, err.Error(), "abc", "the token is not quoted")
			assert.Zero(t, sent.Load(), "the bad token was never sent")
		})
	}
}

// A 401 from another origin (which never got the token) used to trigger a
// refresh of the real token. Only a 401 to a request that carried the
// current token may demand a refresh.
func Test401FromAnotherOriginNeverRefreshes(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "who are you", http.StatusUnauthorized)
	}))
	defer other.Close()
	srv := newAuthServer(t, nil)
	inner := srv.Config.Handler
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/away" {
			http.Redirect(w, r, other.URL+"/x", http.StatusFound)
			return
		}
		inner.ServeHTTP(w, r)
	})
	cfg := authConfig(srv)
	cfg.Auth.AccessToken = "access-1" // valid: nothing needs a refresh
	e := newEngine(t, cfg)
	ctx := ctxTimeout(t, 5*time.Second)
	for _, path := range []string{other.URL + "/direct", "/away"} {
		_, err := e.Get(ctx, path)
		var he *errors.HTTPError
		require.ErrorAs(t, err, &he, path)
		assert.Equal(t, 401, he.Status)
		assert.Equal(t, 1, he.Attempts, "%s: returned as it is, not replayed", path)
	}
	assert.Zero(t, srv.refreshCalls.Load(), "no refresh for another origin's 401")
	_, err := e.Get(ctx, "/still-good")
	require.NoError(t, err, "the real token still works")
}

// A configuration error names the BaseURL or refresh path at fault without
// the password or query it may carry.
func TestConfigErrorsDoNotQuoteSecrets(t *testing.T) {
	const secret = "s3cr3t-in-config"
	for _, cfg := range []engine.Config{
		{BaseURL: "ftp://user:" + secret + "@host/x"},
		{BaseURL: "https://user:" + secret + "@host/%zz"},
		// A password with a '/' in a URL that does not parse used to be
		// taken for the path, and quoted whole.
		{BaseURL: "https://user:ab/" + secret + "@host/x"},
		{BaseURL: "https:///x?api_key=" + secret},
		{BaseURL: "https://host", Auth: engine.Auth{Refresh: &engine.RefreshConfig{Path: "/t%zz?client_secret=" + secret}}},
	} {
		_, err := engine.New(cfg)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), secret)
		assert.Regexp(t, `BaseURL|Auth.Refresh.Path`, err.Error(), "the error names the field")
	}
}
