package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/faultserver"
	"github.com/courier-go/courier/requests"
)

// outcome is what a request against a fault must end as.
type faultWant struct {
	ok       bool
	attempts int
	timeout  bool // the error reports a timeout
}

// methodClass is one of the three ways a request may be retried.
type methodClass struct {
	name string
	req  func(path string) *requests.Request
}

var methodClasses = []methodClass{
	{"GET", func(p string) *requests.Request { return requests.New("GET", p) }},
	{"POST", func(p string) *requests.Request {
		return requests.New("POST", p, requests.WithJSON(map[string]int{"n": 1}))
	}},
	{"POST+key", func(p string) *requests.Request {
		return requests.New("POST", p, requests.WithJSON(map[string]int{"n": 1}), requests.WithIdempotencyKey("key-"+p))
	}},
}

// faultMatrix is the reliability table of the README: for each fault, the
// outcome for GET, POST without a key, and POST with an Idempotency-Key.
// Every attempt of "always" rows meets the fault; "fail=2" rows meet it
// twice, then the server recovers.
var faultMatrix = []struct {
	fault string // path prefix and query
	want  [3]faultWant
}{
	{"ok", [3]faultWant{{true, 1, false}, {true, 1, false}, {true, 1, false}}},
	{"reset-mid-body", [3]faultWant{{false, 3, false}, {false, 1, false}, {false, 3, false}}},
	{"reset-mid-body?fail=2", [3]faultWant{{true, 3, false}, {false, 1, false}, {true, 3, false}}},
	{"close-before-response", [3]faultWant{{false, 3, false}, {false, 1, false}, {false, 3, false}}},
	{"slow-body?bps=100", [3]faultWant{{false, 3, true}, {false, 1, true}, {false, 3, true}}},
	{"slow-body?bps=40000", [3]faultWant{{true, 1, false}, {true, 1, false}, {true, 1, false}}},
	{"blackhole", [3]faultWant{{false, 3, true}, {false, 1, true}, {false, 3, true}}},
	{"latency?ms=30&jitter=20", [3]faultWant{{true, 1, false}, {true, 1, false}, {true, 1, false}}},
	{"truncated", [3]faultWant{{false, 3, false}, {false, 1, false}, {false, 3, false}}},
	{"close-after-response", [3]faultWant{{true, 1, false}, {true, 1, false}, {true, 1, false}}},
	{"garbage-status", [3]faultWant{{false, 3, false}, {false, 1, false}, {false, 3, false}}},
	{"refused", [3]faultWant{{false, 3, false}, {false, 3, false}, {false, 3, false}}},
}

func TestFaultMatrix(t *testing.T) {
	srv, err := faultserver.Start()
	require.NoError(t, err)
	t.Cleanup(srv.Close) // after the parallel subtests, unlike defer
	refused, err := faultserver.RefusedURL()
	require.NoError(t, err)

	for ri, row := range faultMatrix {
		for ci, class := range methodClasses {
			want := row.want[ci]
			t.Run(row.fault+"/"+class.name, func(t *testing.T) {
				t.Parallel()
				base := srv.URL
				if row.fault == "refused" {
					base = refused
				}
				e := newEngine(t, engine.Config{BaseURL: base, Workers: 2, Timeout: 300 * time.Millisecond, Retry: fastRetry()})
				fault, query, _ := strings.Cut(row.fault, "?")
				path := fmt.Sprintf("/%s/%s-%d", fault, strings.ReplaceAll(class.name, "+", "-"), ri)
				if query != "" {
					path += "?" + query
				}
				resp, err := e.Do(ctxTimeout(t, 10*time.Second), class.req(path))
				if want.ok {
					require.NoError(t, err)
					assert.Equal(t, want.attempts, resp.Attempts, "attempts")
				} else {
					var re *errors.RequestError
					require.ErrorAs(t, err, &re, "a transport failure is a *errors.RequestError")
					assert.Equal(t, want.attempts, re.Attempts, "attempts")
					assert.Equal(t, want.timeout, re.Timeout(), "Timeout()")
				}
				plain := strings.SplitN(path, "?", 2)[0]
				switch {
				case row.fault == "refused":
					assert.Zero(t, srv.Received(class.req(path).MethodOrGet(), plain), "nothing reached a server")
				case class.name == "POST":
					assert.Equal(t, 1, srv.Received("POST", plain), "a POST without a key is sent once")
					assert.Equal(t, 1, srv.Applied(plain))
				case class.name == "POST+key":
					assert.Equal(t, 1, srv.Applied(plain), "a keyed POST is applied once, however often it is sent")
				}
				if row.fault != "refused" {
					_, err := e.Get(ctxTimeout(t, 5*time.Second), "/ok/after-"+fault+"-"+class.name)
					assert.NoError(t, err, "the connection pool still works afterwards")
				}
			})
		}
	}
}

func TestRetryAfterMatrix(t *testing.T) {
	type tc struct {
		name    string
		header  func(now time.Time) string
		wait    time.Duration // what the engine must wait before the retry; -1: a backoff
		failNow bool          // fails at once instead: the wait cannot fit the deadline
	}
	cases := []tc{
		{"seconds", func(time.Time) string { return "4" }, 4 * time.Second, false},
		{"HTTP-date", func(now time.Time) string { return now.Add(9 * time.Second).UTC().Format(http.TimeFormat) }, 9 * time.Second, false},
		{"past date", func(now time.Time) string { return now.Add(-time.Hour).UTC().Format(http.TimeFormat) }, 0, false},
		{"garbage", func(time.Time) string { return "after lunch" }, -1, false},
		{"negative", func(time.Time) string { return "-30" }, -1, false},
		{"huge", func(time.Time) string { return "99999999" }, 0, true},
	}
	for _, status := range []int{429, 503} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%d/%s", status, c.name), func(t *testing.T) {
				// A header is a header whatever carries it: in process, in a
				// synctest bubble, synctest.Wait tells when the retry is
				// scheduled on the fake clock.
				synctest.Test(t, func(t *testing.T) {
					clock := newFakeClock()
					client, calls := flaky(status, func() string { return c.header(clock.Now()) })
					e := newEngine(t, engine.Config{BaseURL: "http://api.test", HTTPClient: client, Clock: clock})
					ctx := ctxTimeout(t, 10*time.Second)
					f := e.Submit(ctx, requests.New("GET", "/x"))
					if c.failNow {
						_, err := f.Await(ctx)
						var he *errors.HTTPError
						require.ErrorAs(t, err, &he)
						assert.Equal(t, engine.DefaultMaxRetryAfter, he.RetryAfter, "capped, and reported")
						assert.Contains(t, he.Error(), "does not fit the deadline")
						assert.EqualValues(t, 1, calls.Load())
						return
					}
					if c.wait > 0 || c.wait == -1 {
						synctest.Wait()
						pending := clock.Pending()
						require.Len(t, pending, 1, "a retry is scheduled")
						if c.wait > 0 {
							assert.Equal(t, c.wait, pending[0], "waits as told")
						} else {
							assert.LessOrEqual(t, pending[0], engine.DefaultBaseDelay, "an unusable Retry-After falls back to backoff")
						}
						clock.Advance(pending[0])
					}
					resp, err := f.Await(ctx)
					require.NoError(t, err)
					assert.Equal(t, 2, resp.Attempts)
				})
			})
		}
	}
}

func TestAuthFaults(t *testing.T) {
	t.Run("slow refresh: requests wait, deadlines hold", func(t *testing.T) {
		srv := newAuthServer(t, nil)
		srv.refreshGate = make(chan struct{})
		e := newEngine(t, authConfig(srv))
		short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		patient := e.Submit(ctxTimeout(t, 10*time.Second), requests.New("GET", "/a"))
		_, err := e.Do(short, requests.New("GET", "/b"))
		assert.ErrorIs(t, err, context.DeadlineExceeded, "a request's deadline holds while the refresh is slow")
		close(srv.refreshGate)
		_, err = patient.Await(context.Background())
		assert.NoError(t, err)
		assert.EqualValues(t, 1, srv.refreshCalls.Load())
	})

	t.Run("reset mid-refresh is retried", func(t *testing.T) {
		srv := newAuthServer(t, nil)
		var n atomic.Int64
		inner := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/refresh" && n.Add(1) == 1 {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
				return
			}
			inner.ServeHTTP(w, r)
		})
		e := newEngine(t, authConfig(srv))
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		require.NoError(t, err)
		assert.EqualValues(t, 2, n.Load(), "the reset refresh and its retry")
	})

	for name, answer := range map[string]func(w http.ResponseWriter){
		"refresh answers garbage JSON": func(w http.ResponseWriter) { w.Write([]byte(`{"access_token": tru`)) },
		"refresh answers 401":          func(w http.ResponseWriter) { w.WriteHeader(401) },
		"refresh answers no token":     func(w http.ResponseWriter) { w.Write([]byte(`{"token_type":"Bearer"}`)) },
	} {
		t.Run(name+" expires the session", func(t *testing.T) {
			var expired atomic.Int64
			told := make(chan struct{}, 1) // OnSessionExpired has run
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/refresh" {
					answer(w)
					return
				}
				w.WriteHeader(401)
			}))
			defer srv.Close()
			e := newEngine(t, engine.Config{BaseURL: srv.URL, Auth: engine.Auth{AccessToken: "a", RefreshToken: "r",
				Refresh: &engine.RefreshConfig{Path: "/refresh"}, OnSessionExpired: func() {
					expired.Add(1)
					select {
					case told <- struct{}{}:
					default:
					}
				}}})
			_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
			assert.ErrorIs(t, err, errors.ErrSessionExpired)
			select {
			case <-told:
			case <-ctxTimeout(t, 5*time.Second).Done():
				t.Fatal("OnSessionExpired did not run")
			}
			require.NoError(t, e.Close()) // runs the callbacks still queued, then stops
			assert.EqualValues(t, 1, expired.Load(), "OnSessionExpired ran once")
		})
	}

	t.Run("reused refresh token detected by the server ends both sessions", func(t *testing.T) {
		api := newDemoAPI(t)
		tk := api.Login()
		cfg := func() engine.Config {
			return engine.Config{BaseURL: api.URL, Auth: engine.Auth{AccessToken: "expired", RefreshToken: tk.RefreshToken,
				Refresh: &engine.RefreshConfig{Path: "/auth/refresh"}}}
		}
		a, b := newEngine(t, cfg()), newEngine(t, cfg()) // two holders of one refresh token
		ctx := ctxTimeout(t, 5*time.Second)
		_, err := a.Get(ctx, "/items/1")
		require.NoError(t, err, "the first refresh rotates the token")
		_, err = b.Get(ctx, "/items/1")
		assert.ErrorIs(t, err, errors.ErrSessionExpired, "the second presents the old one: reuse")
		assert.EqualValues(t, 1, api.Stats().RefreshReuse)
		_, err = a.Get(ctx, "/items/2", requests.WithoutDedup())
		assert.Error(t, err, "the server revoked the whole session")
	})

	t.Run("401 without invalid_token from a valid token", func(t *testing.T) {
		var refreshes, calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/refresh" {
				refreshes.Add(1)
				w.Write([]byte(`{"access_token":"a2"}`))
				return
			}
			calls.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope"`)
			w.WriteHeader(401)
		}))
		defer srv.Close()
		onlyInvalidToken := func(status int, h http.Header) bool {
			return status == 401 && strings.Contains(h.Get("WWW-Authenticate"), "invalid_token")
		}
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Auth: engine.Auth{AccessToken: "a", RefreshToken: "r",
			Refresh: &engine.RefreshConfig{Path: "/refresh"}, AuthFailed: onlyInvalidToken}})
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/admin")
		var he *errors.HTTPError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, 401, he.Status)
		assert.Zero(t, refreshes.Load(), "a predicate that wants invalid_token does not refresh")
		assert.EqualValues(t, 1, calls.Load())
	})

	t.Run("403 is returned, never refreshed or retried", func(t *testing.T) {
		var refreshes, calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/refresh" {
				refreshes.Add(1)
				return
			}
			calls.Add(1)
			w.WriteHeader(403)
		}))
		defer srv.Close()
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Auth: engine.Auth{AccessToken: "a", RefreshToken: "r",
			Refresh: &engine.RefreshConfig{Path: "/refresh"}}})
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		var he *errors.HTTPError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, 403, he.Status)
		assert.Zero(t, refreshes.Load())
		assert.EqualValues(t, 1, calls.Load())
	})
}
