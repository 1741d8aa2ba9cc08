package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/windowlimit"
	"github.com/courier-go/courier/requests"
)

// Pacing tests run in a synctest bubble against in-process hosts: time is
// virtual, so "arrived at 1.5s" is exact, and a Retry-After of 30 s takes
// no real time.

// arrivals records when each request reached its host, in virtual time
// since the test began.
type arrivals struct {
	start time.Time
	mu    sync.Mutex
	at    map[string][]time.Duration // by host and path, "a.test/x"
}

func newArrivals() *arrivals {
	return &arrivals{start: time.Now(), at: map[string][]time.Duration{}}
}

func (a *arrivals) note(r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := r.URL.Host + r.URL.Path
	a.at[k] = append(a.at[k], time.Since(a.start))
}

func (a *arrivals) of(k string) []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Duration(nil), a.at[k]...)
}

// hosts serves each host with its own handler, in process.
type hosts map[string]http.HandlerFunc

func (h hosts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f := h[r.URL.Host]; f != nil {
		f(w, r)
		return
	}
	w.Write([]byte("ok"))
}

// pacedEngine starts an engine whose base URL is http://a.test and whose
// transport is h, in process.
func pacedEngine(t *testing.T, h http.Handler, cfg engine.Config) *engine.Engine {
	t.Helper()
	cfg.BaseURL = "http://a.test"
	cfg.HTTPClient = &http.Client{Transport: inproc{h}}
	if cfg.Workers == 0 {
		cfg.Workers = 32
	}
	return newEngine(t, cfg)
}

// getAll submits a GET for each URL at once and requires every one to
// succeed.
func getAll(t *testing.T, e *engine.Engine, urls ...string) {
	t.Helper()
	ctx := context.Background()
	futures := make([]*engine.Future, len(urls))
	for i, u := range urls {
		futures[i] = e.Submit(ctx, requests.New("GET", u, requests.WithQuery("n", strconv.Itoa(i))))
	}
	requireAllOK(t, ctx, futures)
}

func repeat(u string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = u
	}
	return out
}

func seconds(fs ...float64) []time.Duration {
	out := make([]time.Duration, len(fs))
	for i, f := range fs {
		out[i] = time.Duration(f * float64(time.Second))
	}
	return out
}

func TestPerHostLimitsTwoHostsInOneEngine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		note := func(w http.ResponseWriter, r *http.Request) { arr.note(r) }
		e := pacedEngine(t, hosts{"a.test": note, "b.test:8080": note, "c.test:80": note}, engine.Config{
			RateLimit: engine.RateLimit{
				PerHost: engine.Rate{PerSecond: 1, Burst: 1},
				Hosts: map[string]engine.Rate{
					"A.test":      {PerSecond: 2, Burst: 1}, // case does not matter
					"b.test:8080": {PerSecond: 10, Burst: 2},
				},
			},
		})
		var urls []string
		urls = append(urls, repeat("/x", 4)...)                   // a.test, the base URL
		urls = append(urls, repeat("http://b.test:8080/x", 4)...) // its own limit
		urls = append(urls, repeat("http://c.test:80/x", 3)...)   // the per-host default; :80 is no port
		getAll(t, e, urls...)
		assert.Equal(t, seconds(0, 0.5, 1, 1.5), arr.of("a.test/x"))
		assert.Equal(t, seconds(0, 0, 0.1, 0.2), arr.of("b.test:8080/x"), "a burst of 2, then 10/s")
		assert.Equal(t, seconds(0, 1, 2), arr.of("c.test:80/x"))
	})
}

func TestRouteOverrideHasItsOwnLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) { arr.note(r) }}, engine.Config{
			RateLimit: engine.RateLimit{
				Hosts:  map[string]engine.Rate{"a.test": {PerSecond: 10, Burst: 1}},
				Routes: []engine.Route{{Host: "a.test", Prefix: "/search", Rate: engine.Rate{PerSecond: 1, Burst: 1}}},
			},
		})
		getAll(t, e, append(repeat("/search/code", 3), repeat("/searches", 3)...)...)
		assert.Equal(t, seconds(0, 1, 2), arr.of("a.test/search/code"))
		assert.Equal(t, seconds(0, 0.1, 0.2), arr.of("a.test/searches"), "not under /search: the host's limit")
	})
}

func TestGlobalLimitStillAppliesOverHosts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		note := func(w http.ResponseWriter, r *http.Request) { arr.note(r) }
		e := pacedEngine(t, hosts{"a.test": note, "b.test": note}, engine.Config{
			RateLimit: engine.RateLimit{PerSecond: 2, Burst: 1, PerHost: engine.Rate{PerSecond: 100}},
		})
		getAll(t, e, "/x", "http://b.test/x", "/x", "http://b.test/x")
		all := append(arr.of("a.test/x"), arr.of("b.test/x")...)
		assert.ElementsMatch(t, seconds(0, 0.5, 1, 1.5), all)
	})
}

// TestRetryAfterHoldsWhatItsStatusSpeaksFor pins the hold scopes: by
// default a 429's Retry-After holds the host and a 503's only its path;
// HoldHost and HoldRoute hold the one or the other after either status.
func TestRetryAfterHoldsWhatItsStatusSpeaksFor(t *testing.T) {
	for _, tc := range []struct {
		status    int
		scope     engine.HoldScope
		holdsHost bool
	}{
		{429, engine.HoldAuto, true},
		{503, engine.HoldAuto, false},
		{429, engine.HoldHost, true},
		{503, engine.HoldHost, true},
		{429, engine.HoldRoute, false},
		{503, engine.HoldRoute, false},
	} {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.scope), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				arr := newArrivals()
				var once sync.Once
				a := func(w http.ResponseWriter, r *http.Request) {
					arr.note(r)
					if r.URL.Path == "/busy" {
						refused := false
						once.Do(func() { refused = true })
						if refused {
							w.Header().Set("Retry-After", "10")
							w.WriteHeader(tc.status)
							return
						}
					}
				}
				e := pacedEngine(t, hosts{"a.test": a, "b.test": func(w http.ResponseWriter, r *http.Request) { arr.note(r) }},
					engine.Config{RateLimit: engine.RateLimit{Adaptive: engine.Adaptive{HoldScope: tc.scope}}})
				ctx := context.Background()
				busy := e.Submit(ctx, requests.New("GET", "/busy"))
				synctest.Wait() // answered; the host or the path is held
				others := []*engine.Future{
					e.Submit(ctx, requests.New("GET", "/busy", requests.WithHeader("X-Other", "1"))),
					e.Submit(ctx, requests.New("GET", "/other")),
					e.Submit(ctx, requests.New("GET", "http://b.test/other")),
				}
				requireAllOK(t, ctx, append(others, busy))
				busyAt := arr.of("a.test/busy")
				require.Len(t, busyAt, 3)
				assert.Zero(t, busyAt[0])
				// The path is held; after a 429 the host is paced too, so
				// the second may come later.
				assert.Equal(t, 10*time.Second, busyAt[1], "the path is held")
				assert.GreaterOrEqual(t, busyAt[2], 10*time.Second, "the path is held")
				if tc.holdsHost {
					assert.Equal(t, seconds(10), arr.of("a.test/other"), "held with the host")
				} else {
					assert.Equal(t, seconds(0), arr.of("a.test/other"), "another path of the host is not held")
				}
				assert.Equal(t, seconds(0), arr.of("b.test/other"), "another host is not held")
				st := e.Stats()
				assert.EqualValues(t, 1, st.Holds)
				assert.EqualValues(t, map[bool]int64{true: 1, false: 0}[tc.status == 429], st.Throttled)
			})
		})
	}
}

func TestRetryAfterHoldsOnlyItsRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		var once sync.Once
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			if r.URL.Path == "/search/a" {
				refused := false
				once.Do(func() { refused = true })
				if refused {
					w.Header().Set("Retry-After", "5")
					w.WriteHeader(429)
				}
			}
		}}, engine.Config{RateLimit: engine.RateLimit{Routes: []engine.Route{{Host: "a.test", Prefix: "/search"}}}})
		ctx := context.Background()
		first := e.Submit(ctx, requests.New("GET", "/search/a"))
		synctest.Wait()
		getAll(t, e, "/search/b", "/items")
		requireAllOK(t, ctx, []*engine.Future{first})
		assert.Equal(t, seconds(5), arr.of("a.test/search/b"), "the route is held")
		assert.Equal(t, seconds(0), arr.of("a.test/items"), "the rest of the host is not")
	})
}

func TestQuotaAtZeroHoldsTheHost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header func(now time.Time) http.Header
		held   time.Duration
	}{
		{"IETF RateLimit", func(time.Time) http.Header {
			return http.Header{"Ratelimit": {`"default";r=0;t=30`}, "Ratelimit-Policy": {`"default";q=100;w=60`}}
		}, 30 * time.Second},
		{"IETF RateLimit, several policies", func(time.Time) http.Header {
			return http.Header{"Ratelimit": {`"burst";r=5;t=1, "daily";r=0;t=40`}}
		}, 40 * time.Second},
		{"RateLimit dictionary of the earlier drafts", func(time.Time) http.Header {
			return http.Header{"Ratelimit": {`limit=10, remaining=0, reset=5`}}
		}, 5 * time.Second},
		{"X-RateLimit with Unix seconds", func(now time.Time) http.Header {
			return http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {strconv.FormatInt(now.Add(20*time.Second).Unix(), 10)}}
		}, 20 * time.Second},
		{"X-RateLimit with seconds from now", func(time.Time) http.Header {
			return http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {"7"}}
		}, 7 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// Whole seconds, so that a Unix reset is exact.
				time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
				arr := newArrivals()
				var once sync.Once
				e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
					arr.note(r)
					once.Do(func() {
						for k, v := range tc.header(time.Now()) {
							w.Header()[k] = v
						}
					})
				}}, engine.Config{})
				getAll(t, e, "/x") // a 2xx, but the quota is spent
				getAll(t, e, "/x", "/x")
				assert.Equal(t, []time.Duration{0, tc.held, tc.held}, arr.of("a.test/x"))
				assert.EqualValues(t, 1, e.Stats().Holds)
				assert.Zero(t, e.Stats().Throttled)
			})
		})
	}
}

func TestQuotaLeftCapsAttemptsUntilTheReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		var mu sync.Mutex
		left := 4
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			mu.Lock()
			defer mu.Unlock()
			if time.Since(arr.start) >= 10*time.Second && left < 50 {
				left = 100 // the window has reset
			}
			if left == 0 {
				w.WriteHeader(429)
				return
			}
			left--
			w.Header().Set("X-Ratelimit-Remaining", strconv.Itoa(left))
			w.Header().Set("X-Ratelimit-Reset", "10")
		}}, engine.Config{
			// One attempt at a time: answers come in the order the
			// attempts claimed the quota. With attempts racing, one that
			// reaches the server after a later claim makes the pacer
			// discount that claim twice and hold one attempt early, on
			// the safe side (see pacer.observe).
			Workers: 1,
		})
		getAll(t, e, "/x") // announces 3 left
		getAll(t, e, repeat("/x", 8)...)
		assert.Equal(t, seconds(0, 0, 0, 0, 10, 10, 10, 10, 10), arr.of("a.test/x"),
			"three more went at once, the rest after the reset")
		assert.Zero(t, e.Stats().Throttled)
	})
}

// recordingLimiter is a Limiter that lets every attempt go at once and
// records the limits it was asked to wait for; holds go to a local one.
type recordingLimiter struct {
	engine.Limiter
	mu    sync.Mutex
	waits []limitCall
	holds []engine.LimitKey
}

type limitCall struct {
	key  engine.LimitKey
	rate engine.Rate
}

func (l *recordingLimiter) Wait(ctx context.Context, key engine.LimitKey, r engine.Rate) error {
	l.mu.Lock()
	l.waits = append(l.waits, limitCall{key, r})
	l.mu.Unlock()
	return ctx.Err()
}

func (l *recordingLimiter) Hold(key engine.LimitKey, until time.Time) {
	l.mu.Lock()
	l.holds = append(l.holds, key)
	l.mu.Unlock()
	l.Limiter.Hold(key, until)
}

func (l *recordingLimiter) rates() []float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []float64
	for _, w := range l.waits {
		if w.key.Host != "" {
			out = append(out, w.rate.PerSecond)
		}
	}
	return out
}

func TestLimiterSeesEveryWaitAndHoldByKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := &recordingLimiter{Limiter: engine.NewLocalLimiter(nil)}
		var once sync.Once
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/search/x" {
				once.Do(func() {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(503)
				})
			}
		}}, engine.Config{
			Workers: 1,
			RateLimit: engine.RateLimit{
				PerSecond: 50, Burst: 5,
				PerHost: engine.Rate{PerSecond: 10},
				Routes:  []engine.Route{{Host: "a.test", Prefix: "/search", Rate: engine.Rate{PerSecond: 2, Burst: 1}}},
				Limiter: lim,
			},
		})
		getAll(t, e, "/x", "/search/x", "http://b.test:8080/y")
		global := engine.LimitKey{}
		host := engine.LimitKey{Host: "a.test"}
		route := engine.LimitKey{Host: "a.test", Route: "/search"}
		other := engine.LimitKey{Host: "b.test:8080"}
		assert.ElementsMatch(t, []limitCall{
			{host, engine.Rate{PerSecond: 10, Burst: 10}}, {global, engine.Rate{PerSecond: 50, Burst: 5}},
			{route, engine.Rate{PerSecond: 2, Burst: 1}}, {global, engine.Rate{PerSecond: 50, Burst: 5}},
			{route, engine.Rate{PerSecond: 2, Burst: 1}}, {global, engine.Rate{PerSecond: 50, Burst: 5}}, // the retry
			{other, engine.Rate{PerSecond: 10, Burst: 10}}, {global, engine.Rate{PerSecond: 50, Burst: 5}},
		}, lim.waits)
		// A 503 holds its path alone, as a key whose route is the path.
		path := engine.LimitKey{Host: "a.test", Route: "/search/x"}
		assert.Equal(t, []engine.LimitKey{path}, lim.holds)
		assert.Equal(t, "global", global.String())
		assert.Equal(t, "a.test/search", route.String())
	})
}

func TestHoldsAreSharedThroughTheLimiter(t *testing.T) {
	// Two engines on one Limiter, as a fleet shares one: the Retry-After
	// that one of them gets holds the other.
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		var once sync.Once
		h := hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			once.Do(func() {
				w.Header().Set("Retry-After", "3")
				w.WriteHeader(429)
			})
		}}
		shared := engine.NewLocalLimiter(nil)
		one := pacedEngine(t, h, engine.Config{RateLimit: engine.RateLimit{Limiter: shared}})
		two := pacedEngine(t, h, engine.Config{RateLimit: engine.RateLimit{Limiter: shared}})
		f := one.Submit(context.Background(), requests.New("GET", "/one"))
		synctest.Wait()
		getAll(t, two, "/two")
		requireAllOK(t, context.Background(), []*engine.Future{f})
		assert.Equal(t, seconds(3), arr.of("a.test/two"))
		assert.Zero(t, two.Stats().Holds, "the hold was the other engine's")
	})
}

func TestBackOffMultipliesAndRecoversAdditively(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := &recordingLimiter{Limiter: engine.NewLocalLimiter(nil)}
		var mu sync.Mutex
		n := 0
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			n++
			refuse := n == 2 || n == 3
			mu.Unlock()
			if refuse {
				w.WriteHeader(429) // no Retry-After: no hold, only back-off
			}
		}}, engine.Config{
			Workers: 1,
			Retry:   engine.Retry{MaxAttempts: 1},
			RateLimit: engine.RateLimit{
				Hosts:    map[string]engine.Rate{"a.test": {PerSecond: 10, Burst: 4}},
				Adaptive: engine.Adaptive{Decrease: 0.5, Increase: 0.1, MinPerSecond: 3},
				Limiter:  lim,
			},
		})
		ctx := context.Background()
		for i := range 12 {
			_, _ = e.Get(ctx, "/x", requests.WithQuery("i", strconv.Itoa(i)))
		}
		assert.InDeltaSlice(t, []float64{
			10, 10, // the second is refused
			5,                    // halved; the third is refused too
			3,                    // halved to the floor
			4, 5, 6, 7, 8, 9, 10, // each 2xx adds a tenth of the limit
			10, // never above it
		}, lim.rates(), 1e-9)
		assert.EqualValues(t, 2, e.Stats().Throttled)
		assert.Zero(t, e.Stats().Holds)
	})
}

func TestBackOffOnceForAttemptsInFlightTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := &recordingLimiter{Limiter: engine.NewLocalLimiter(nil)}
		var mu sync.Mutex
		n := 0
		release := make(chan struct{})
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			n++
			first := n <= 4
			mu.Unlock()
			if first {
				<-release // four in flight at once, all refused
				w.WriteHeader(429)
			}
		}}, engine.Config{
			Retry: engine.Retry{MaxAttempts: 1},
			RateLimit: engine.RateLimit{
				Hosts:   map[string]engine.Rate{"a.test": {PerSecond: 100, Burst: 4}},
				Limiter: lim,
			},
		})
		ctx := context.Background()
		var futures []*engine.Future
		for i := range 4 {
			futures = append(futures, e.Submit(ctx, requests.New("GET", "/x", requests.WithQuery("i", strconv.Itoa(i)))))
		}
		synctest.Wait()
		close(release)
		for _, f := range futures {
			_, err := f.Await(ctx)
			require.Error(t, err)
		}
		_, err := e.Get(ctx, "/after")
		require.NoError(t, err)
		rates := lim.rates()
		assert.Equal(t, 50.0, rates[len(rates)-1], "one halving for the four 429s, not four")
	})
}

func TestUnlimitedHostLearnsItsCeilingFromTheFirst429(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := &recordingLimiter{Limiter: engine.NewLocalLimiter(nil)}
		var mu sync.Mutex
		n := 0
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			n++
			refuse := n == 21
			mu.Unlock()
			if refuse {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(429)
			}
		}}, engine.Config{Workers: 1, RateLimit: engine.RateLimit{Limiter: lim}})
		ctx := context.Background()
		for i := range 25 {
			_, err := e.Get(ctx, "/x", requests.WithQuery("i", strconv.Itoa(i)))
			require.NoError(t, err)
		}
		// 20 answers in no time, then a hold of a second: 20 a second.
		assert.Equal(t, []float64{20, 20, 20, 20, 20}, lim.rates(), "not paced before the 429, then at the observed rate")
		assert.EqualValues(t, 1, e.Stats().Holds)
	})
}

func TestAdaptiveDisabledIgnoresWhatAnswersSay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		var once sync.Once
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			once.Do(func() {
				w.Header().Set("X-Ratelimit-Remaining", "0")
				w.Header().Set("X-Ratelimit-Reset", "30")
			})
		}}, engine.Config{RateLimit: engine.RateLimit{Adaptive: engine.Adaptive{Disabled: true}}})
		getAll(t, e, "/x")
		getAll(t, e, "/x")
		assert.Equal(t, seconds(0, 0), arr.of("a.test/x"))
		assert.Zero(t, e.Stats().Holds)
	})
}

func TestRateLimitConfigErrors(t *testing.T) {
	_, err := engine.New(engine.Config{BaseURL: "http://x", RateLimit: engine.RateLimit{
		PerHost:  engine.Rate{PerSecond: -1},
		Hosts:    map[string]engine.Rate{"http://a.test": {PerSecond: 1}, "b.test": {Burst: -2}},
		Routes:   []engine.Route{{Host: "", Prefix: "search"}},
		Adaptive: engine.Adaptive{Decrease: 1.5},
	}})
	require.Error(t, err)
	for _, want := range []string{
		"RateLimit.PerHost.PerSecond is not a rate (-1)",
		`RateLimit.Hosts: "http://a.test" is not a host`,
		`RateLimit.Hosts["b.test"].Burst is negative (-2)`,
		`RateLimit.Routes[0].Host: "" is not a host`,
		`RateLimit.Routes[0].Prefix "search" does not start with /`,
		"RateLimit.Adaptive.Decrease 1.5 is not in (0, 1)",
	} {
		assert.Contains(t, err.Error(), want)
	}
}

// windowServer is a windowlimit.Window (limit requests per one-second
// window, 429 and Retry-After beyond, with quota the X-RateLimit headers)
// whose every answer takes latency, plus up to jitter.
type windowServer struct {
	windowlimit.Window
	quota   bool
	latency time.Duration
	jitter  time.Duration
}

func (s *windowServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	time.Sleep(s.latency + rand.N(s.jitter+1))
	s.Serve(w, time.Now(), s.quota)
}

// TestWindowedServer500RequestsAtConcurrency32 is the target in
// virtual time: 500 requests at concurrency 32 against a server allowing
// 50 a second. It logs the 429s and the time against the 10 s the limit
// allows.
func TestWindowedServer500RequestsAtConcurrency32(t *testing.T) {
	for _, tc := range []struct {
		name   string
		quota  bool
		max429 int
	}{
		{"Retry-After only", false, 64},
		{"with X-RateLimit headers", true, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
				srv := &windowServer{Window: windowlimit.Window{Limit: 50}, quota: tc.quota, latency: time.Millisecond, jitter: 10 * time.Millisecond}
				e := pacedEngine(t, srv, engine.Config{Workers: 32})
				start := time.Now()
				getAll(t, e, repeat("/x", 500)...)
				took := time.Since(start)
				st := e.Stats()
				accepted, refused := srv.Counts()
				t.Logf("%s: 500 requests in %s virtual (%.2f of the 10s the limit allows), %d answered 429, %d holds, %d retries",
					tc.name, took.Round(time.Millisecond), took.Seconds()/10, refused, st.Holds, st.Retries)
				assert.Equal(t, 500, accepted)
				assert.LessOrEqual(t, refused, tc.max429)
				assert.EqualValues(t, refused, st.Throttled)
			})
		})
	}
}

func TestAHeldHostKeepsNoWorkerFromOtherHosts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arr := newArrivals()
		var once sync.Once
		e := pacedEngine(t, hosts{
			"a.test": func(w http.ResponseWriter, r *http.Request) {
				arr.note(r)
				once.Do(func() {
					w.Header().Set("Retry-After", "10")
					w.WriteHeader(429)
				})
			},
			"b.test": func(w http.ResponseWriter, r *http.Request) { arr.note(r) },
		}, engine.Config{Workers: 1})
		ctx := context.Background()
		first := e.Submit(ctx, requests.New("GET", "/x"))
		synctest.Wait() // a.test is held for 10s
		var futures []*engine.Future
		for i := range 3 {
			futures = append(futures, e.Submit(ctx, requests.New("GET", "/x", requests.WithQuery("i", strconv.Itoa(i)))))
		}
		futures = append(futures, e.Submit(ctx, requests.New("GET", "http://b.test/y")))
		requireAllOK(t, ctx, append(futures, first))
		assert.Equal(t, seconds(0), arr.of("b.test/y"), "the one worker was not kept waiting on a.test")
		assert.Equal(t, seconds(0, 10, 10, 10, 10), arr.of("a.test/x"))
		for _, f := range futures[:3] {
			resp, err := f.Await(ctx)
			require.NoError(t, err)
			assert.Equal(t, 1, resp.Attempts, "waiting out a hold is not an attempt")
		}
	})
}

// TestQuotaOfTheLatestAnswerReplacesTheLast is the scenario of a quota
// kept at its latest reset: an answer with 4000 left and a reset in an
// hour, then one with none left and a reset in 2 s, held the host for the
// hour (the smaller remaining count, the larger reset). The latest answer
// tells the quota: the host is held for 2 s.
func TestQuotaOfTheLatestAnswerReplacesTheLast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Whole seconds, so that a Unix reset is exact.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		arr := newArrivals()
		var mu sync.Mutex
		n := 0
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			mu.Lock()
			n++
			mu.Unlock()
			switch n {
			case 1:
				w.Header().Set("X-Ratelimit-Remaining", "4000")
				w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
			case 2:
				w.Header().Set("X-Ratelimit-Remaining", "0")
				w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(2*time.Second).Unix(), 10))
			}
		}}, engine.Config{})
		for range 3 {
			getAll(t, e, "/x")
		}
		assert.Equal(t, seconds(0, 0, 2), arr.of("a.test/x"), "held until the latest answer's reset")
		assert.EqualValues(t, 1, e.Stats().Holds)
	})
}

// TestQuotaHoldIsCappedLikeRetryAfter pins that a spent quota whose reset
// is an hour away holds the host for Retry.MaxRetryAfter, not the hour,
// and that the log says so; the attempt after the cap learns the quota
// afresh.
func TestQuotaHoldIsCappedLikeRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		arr := newArrivals()
		var mu sync.Mutex
		n := 0
		log, logs := captureLog()
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			mu.Lock()
			n++
			first := n == 1
			mu.Unlock()
			if first {
				w.Header().Set("X-Ratelimit-Remaining", "0")
				w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
			}
		}}, engine.Config{Logger: log, Retry: engine.Retry{MaxRetryAfter: 20 * time.Second}})
		for range 3 {
			getAll(t, e, "/x")
		}
		assert.Equal(t, seconds(0, 20, 20), arr.of("a.test/x"), "held for the cap, then the quota is learned afresh")
		assert.Contains(t, logs.String(), "held for the cap")
		assert.Contains(t, logs.String(), `"limit_key":"a.test"`)
	})
}

// TestSpentSearchQuotaDoesNotHoldCore pins GitHub's separate quotas: an
// answer whose X-RateLimit-Resource is "search" and whose quota is spent
// holds the search requests until its reset, never those that spend the
// "core" quota.
func TestSpentSearchQuotaDoesNotHoldCore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		arr := newArrivals()
		start := time.Now()
		e := pacedEngine(t, hosts{"a.test": func(w http.ResponseWriter, r *http.Request) {
			arr.note(r)
			h := w.Header()
			if strings.HasPrefix(r.URL.Path, "/search/") {
				h.Set("X-Ratelimit-Resource", "search")
				h.Set("X-Ratelimit-Limit", "30")
				// The search window of the test's first minute is spent by
				// its first request.
				left := "0"
				if time.Since(start) >= 30*time.Second {
					left = "29"
				}
				h.Set("X-Ratelimit-Remaining", left)
				h.Set("X-Ratelimit-Reset", strconv.FormatInt(start.Add(30*time.Second).Unix(), 10))
				return
			}
			h.Set("X-Ratelimit-Resource", "core")
			h.Set("X-Ratelimit-Limit", "5000")
			h.Set("X-Ratelimit-Remaining", "4990")
			h.Set("X-Ratelimit-Reset", strconv.FormatInt(start.Add(time.Hour).Unix(), 10))
		}}, engine.Config{})
		getAll(t, e, "/search/code") // the search quota is spent
		getAll(t, e, "/repos/o/r")   // core has plenty
		getAll(t, e, "/search/code", "/search/code/more", "/repos/o/r/issues", "/users/u")
		assert.Equal(t, seconds(0, 30), arr.of("a.test/search/code"), "search is held until its reset")
		assert.Equal(t, seconds(30), arr.of("a.test/search/code/more"), "search is held until its reset")
		assert.Equal(t, seconds(0), arr.of("a.test/repos/o/r"))
		assert.Equal(t, seconds(0), arr.of("a.test/repos/o/r/issues"), "core is not held")
		assert.Equal(t, seconds(0), arr.of("a.test/users/u"), "core is not held")
		assert.EqualValues(t, 1, e.Stats().Holds, "the search quota's hold")
	})
}
