package main

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/internal/redistest"
)

// fleetAPI is the demo API behind one listener per process of a fleet, so
// a test knows which process sent what. It counts per listener.
type fleetAPI struct {
	*demo.Server
	urls []string

	requests []atomic.Int64
	refresh  []atomic.Int64 // refresh calls passed on, per listener
	on401    func(listener int)
	// holdRefresh, if set, sees each refresh call before it reaches the
	// server; when it returns true the call is neither passed on nor
	// counted (the refresh token is not spent).
	holdRefresh func(listener int, r *http.Request) bool

	mu        sync.Mutex  // protects refreshAt
	refreshAt []time.Time // when each refresh call arrived
}

// refreshesBetween counts the refresh calls that arrived in (from, to).
func (a *fleetAPI) refreshesBetween(from, to time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, at := range a.refreshAt {
		if at.After(from) && at.Before(to) {
			n++
		}
	}
	return n
}

func startFleetAPI(t *testing.T, listeners int, cfg demo.Config) *fleetAPI {
	a := &fleetAPI{
		Server:   demo.New(cfg),
		requests: make([]atomic.Int64, listeners),
		refresh:  make([]atomic.Int64, listeners),
	}
	for i := range listeners {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.requests[i].Add(1)
			if r.URL.Path == "/auth/refresh" && a.holdRefresh != nil && a.holdRefresh(i, r) {
				return
			}
			if r.URL.Path == "/auth/refresh" {
				a.mu.Lock()
				a.refreshAt = append(a.refreshAt, time.Now())
				a.mu.Unlock()
				a.refresh[i].Add(1)
			}
			rec := &statusRecorder{ResponseWriter: w}
			a.Server.ServeHTTP(rec, r)
			if rec.status == http.StatusUnauthorized && a.on401 != nil {
				a.on401(i)
			}
		}))
		t.Cleanup(srv.Close)
		a.urls = append(a.urls, srv.URL)
	}
	return a
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// fleetFetch starts a `courier fetch` of the fleet on in, through listener
// i of api, with the session's tokens in its environment and short leases
// and waits so that failures show in seconds.
func fleetFetch(t *testing.T, api *fleetAPI, i int, redisURL string, tk demo.Tokens, in string, extra ...string) *fleetProc {
	args := append([]string{"fetch", "--base-url", api.urls[i],
		"--redis", redisURL, "--fleet", "session-test", "--refresh-path", "/auth/refresh",
		"--summary=false", "--concurrency", "4"}, extra...)
	return startFleetProc(t, tokenEnv(tk), append(args, in)...)
}

// requireAllOK checks that p exited 0 with n lines, each a 200.
func requireAllOK(t *testing.T, p *fleetProc, n int) {
	t.Helper()
	p.wait(t)
	lines := parseOutput(t, p.stdout.String())
	for _, l := range lines {
		if l.Error != nil {
			require.Equal(t, 200, l.Status, "line %d: %s", l.Line, *l.Error)
		}
		require.Equal(t, 200, l.Status, "line %d", l.Line)
	}
	require.Len(t, lines, n)
	require.Equal(t, 0, p.code, "stderr: %s", p.stderr.String())
}

func TestFleetSessionOneRefreshPerExpiryAcrossEightProcesses(t *testing.T) {
	// 8 processes, 20,000 lines, tokens that expire every 500 uses and
	// refresh tokens that rotate, with reuse detection: every line is ok,
	// no refresh token is used twice, and the fleet refreshes exactly once
	// per expiry (20,000 uses are 40 tokens: 39 refreshes).
	const procs, perProc, uses = 8, 2500, 500
	rdb := redistest.Start(t, redistest.Options{})
	api := startFleetAPI(t, procs, demo.Config{AccessUses: uses})
	tk := api.Login()
	var ps []*fleetProc
	for i, in := range inputFiles(t, procs, perProc, "/items") {
		ps = append(ps, fleetFetch(t, api, i, rdb.URL(), tk, in))
	}
	for _, p := range ps {
		requireAllOK(t, p, perProc)
	}
	st := api.Stats()
	assert.Zero(t, st.RefreshReuse, "refresh tokens used twice")
	assert.EqualValues(t, procs*perProc/uses-1, st.Refreshes, "refreshes")
}

func TestFleetSessionRedisStoppedMidBatch(t *testing.T) {
	// Redis (with an append-only file) stops mid-batch, while the
	// processes need a refresh, and comes back: no refresh is sent while
	// it is away, nothing is lost, nothing is reused.
	const procs, perProc, uses = 4, 500, 250
	rdb := redistest.Start(t, redistest.Options{AppendOnly: true})
	api := startFleetAPI(t, procs, demo.Config{AccessUses: uses})
	var (
		down      atomic.Bool
		stopOnce  sync.Once
		stopNow   = make(chan struct{})
		startOnce sync.Once
		startNow  = make(chan struct{})
		waiting   atomic.Int64
		refreshes atomic.Int64 // refresh calls while Redis was down
	)
	// Stop Redis at the first expiry after 600 requests; start it again
	// once every process has been refused a few times with it away (they
	// are waiting for a refresh that cannot happen), or after 5 s.
	api.on401 = func(int) {
		total := int64(0)
		for i := range api.requests {
			total += api.requests[i].Load()
		}
		if total > 600 {
			stopOnce.Do(func() { close(stopNow) })
		}
		if down.Load() && waiting.Add(1) >= 2*procs {
			startOnce.Do(func() { close(startNow) })
		}
	}
	tk := api.Login()
	var ps []*fleetProc
	for i, in := range inputFiles(t, procs, perProc, "/items") {
		ps = append(ps, fleetFetch(t, api, i, rdb.URL(), tk, in))
	}
	select {
	case <-stopNow:
	case <-time.After(60 * time.Second):
		t.Fatal("the batch never reached 600 requests")
	}
	rdb.Stop()
	stopped := time.Now()
	down.Store(true)
	select {
	case <-startNow:
	case <-time.After(5 * time.Second):
	}
	// A refresh whose lock was taken just before the stop may still
	// arrive; none may start once Redis is gone. Give it a moment.
	if d := time.Until(stopped.Add(time.Second)); d > 0 {
		<-time.After(d)
	}
	refreshes.Store(int64(api.refreshesBetween(stopped.Add(500*time.Millisecond), time.Now())))
	down.Store(false)
	rdb.Restart()
	for _, p := range ps {
		requireAllOK(t, p, perProc)
	}
	st := api.Stats()
	assert.Zero(t, st.RefreshReuse, "refresh tokens used twice")
	assert.Zero(t, refreshes.Load(), "refreshes sent while Redis was away")
	assert.EqualValues(t, procs*perProc/uses-1, st.Refreshes, "one refresh per expiry")
}

func TestFleetSessionPartitionedProcessNeverSendsAStaleRefreshToken(t *testing.T) {
	// One process reaches Redis through a proxy that the test cuts. The
	// others go on and refresh, which rotates the refresh token that the
	// cut-off one still holds. It must not send it: it waits, and once
	// Redis is back it adopts the fleet's tokens.
	const procs, perProc, uses = 3, 300, 200
	rdb := redistest.Start(t, redistest.Options{})
	proxy := rdb.Proxy(t)
	api := startFleetAPI(t, procs, demo.Config{AccessUses: uses})
	tk := api.Login()
	inputs := inputFiles(t, procs, perProc, "/items")
	cutOff := fleetFetch(t, api, 0, proxy.URL(), tk, inputs[0], "--concurrency", "2")
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waited 60s for %s", what)
			}
			select {
			case <-cutOff.done:
				t.Fatalf("the cut-off process ended early: %s", cutOff.stderr.String())
			case <-time.After(time.Millisecond):
			}
		}
	}
	waitFor("its first request", func() bool { return api.requests[0].Load() > 0 })
	proxy.Cut()
	var others []*fleetProc
	for i := 1; i < procs; i++ {
		others = append(others, fleetFetch(t, api, i, rdb.URL(), tk, inputs[i]))
	}
	// Once the others have rotated the refresh token it holds, let it
	// back: it must adopt theirs, not send its own.
	waitFor("a refresh by the others", func() bool { return api.Stats().Refreshes > 0 })
	assert.Zero(t, api.refresh[0].Load(), "no refresh from the cut-off process while cut off")
	proxy.Restore()
	for _, p := range others {
		requireAllOK(t, p, perProc)
	}
	requireAllOK(t, cutOff, perProc)
	st := api.Stats()
	assert.Zero(t, st.RefreshReuse, "refresh tokens used twice")
}
