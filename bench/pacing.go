package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/windowlimit"
	"github.com/courier-go/courier/requests"
)

// windowAPI is a windowlimit.Window: Limit requests per one-second window (windows start at
// whole Unix seconds) and answers 429 beyond, with a Retry-After of the
// whole seconds left in the window, rounded up; with quota, every answer
// also carries X-RateLimit-Remaining and X-RateLimit-Reset (Unix seconds),
// as GitHub sends them. /flaky/ID answers 503 + Retry-After: 1 the first
// time an ID is asked for; /down answers 503 always.
type windowAPI struct {
	windowlimit.Window
	quota atomic.Bool

	mu   sync.Mutex // protects seen and down
	seen map[string]bool
	down int
}

func (s *windowAPI) reset(quota bool) {
	s.Window.Reset()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quota.Store(quota)
	s.down = 0
	s.seen = map[string]bool{}
}

func (s *windowAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/down":
		s.mu.Lock()
		s.down++
		s.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case len(r.URL.Path) > 7 && r.URL.Path[:7] == "/flaky/":
		s.mu.Lock()
		first := !s.seen[r.URL.Path]
		s.seen[r.URL.Path] = true
		s.mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return
	}
	s.Serve(w, time.Now(), s.quota.Load())
}

// pacing measures how courier paces itself against servers that limit it:
// the targets, in real time. The server runs in this process: what
// is measured is dominated by the server's windows, not by CPU.
func pacing() {
	fmt.Printf("## Pacing (courier alone, real time)\n\n")
	api := &windowAPI{Window: windowlimit.Window{Limit: 50}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	hs := &http.Server{Handler: api}
	go hs.Serve(ln)
	defer hs.Close()
	base := "http://" + ln.Addr().String()

	fmt.Println("| scenario | measured | target |")
	fmt.Println("| --- | --- | --- |")
	n := 500
	for _, tc := range []struct {
		name     string
		quota    bool
		adaptive bool
		target   string
	}{
		{"Retry-After only", false, true, "at most 64 answers 429, all succeed, at most 1.25 of the ideal time"},
		{"X-RateLimit headers on every answer", true, true, "at most 32 answers 429"},
		{"Retry-After only, adaptive pacing off (as before)", false, false, "(the old behaviour, for comparison)"},
	} {
		api.reset(tc.quota)
		// Start just after a window opens, so the ideal is 10 windows.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 5*time.Millisecond)))
		e := newPacingEngine(base, 32, engine.RateLimit{Adaptive: engine.Adaptive{Disabled: !tc.adaptive}})
		took, failed := submitAll(e, n, func(i int) string { return "/items/" + strconv.Itoa(i) })
		st := e.Stats()
		e.Close()
		_, refused := api.Counts()
		ideal := time.Duration(n/api.Limit) * time.Second
		fmt.Printf("| %d requests at concurrency 32 against 50 per one-second window, %s | %d answers 429; %d failed; %s (%.2f of the %s the limit allows); %d holds, %d retries | %s |\n",
			n, tc.name, refused, failed, took.Round(time.Millisecond), took.Seconds()/ideal.Seconds(), ideal, st.Holds, st.Retries, tc.target)
	}

	api.reset(false)
	e := newPacingEngine(base, 32, engine.RateLimit{})
	took, failed := submitAll(e, 100, func(i int) string { return "/flaky/" + strconv.Itoa(i) })
	st := e.Stats()
	e.Close()
	fmt.Printf("| 100 requests at once, each answered 503 + Retry-After: 1 once | %d failed; %d retries; %s | all succeed |\n",
		failed, st.Retries, took.Round(time.Millisecond))

	api.reset(false)
	e = newPacingEngine(base, 32, engine.RateLimit{})
	_, failed = submitAll(e, 300, func(int) string { return "/down" })
	e.Close()
	api.mu.Lock()
	down := api.down
	api.mu.Unlock()
	fmt.Printf("| 300 requests to a server that answers 503 to all | %d upstream calls; %d failed | at most 300 + 500/5 = 400 calls |\n\n", down, failed)
}

func newPacingEngine(base string, workers int, rl engine.RateLimit) *engine.Engine {
	e, err := engine.New(engine.Config{BaseURL: base, HTTPClient: &http.Client{Transport: transport()},
		Workers: workers, RateLimit: rl, Retry: engine.Retry{MaxAttempts: 3}})
	if err != nil {
		panic(err)
	}
	return e
}

// submitAll submits n GETs at once and awaits them all.
func submitAll(e *engine.Engine, n int, path func(int) string) (time.Duration, int) {
	ctx := context.Background()
	start := time.Now()
	futures := make([]*engine.Future, n)
	for i := range futures {
		futures[i] = e.Submit(ctx, requests.New("GET", path(i), requests.WithoutDedup()))
	}
	failed := 0
	for _, f := range futures {
		if _, err := f.Await(ctx); err != nil {
			failed++
		}
	}
	return time.Since(start), failed
}
