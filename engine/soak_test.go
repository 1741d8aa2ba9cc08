package engine_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	courerr "github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/faultserver"
	"github.com/courier-go/courier/requests"
)

var soak = flag.Bool("soak", false, "run the long soak test: 200,000 requests (go test ./engine -run Soak -args -soak)")

// soakPaths are the faults a soak request may meet, weighted by repetition.
var soakPaths = []string{
	"/ok/a", "/ok/b", "/ok/c", "/ok/d", "/ok/e", "/ok/f",
	"/latency/x?ms=3&jitter=3",
	"/close-after-response/x",
	"/slow-body/x?bps=100000",
	"/reset-mid-body/x?fail=%d",
	"/close-before-response/x?fail=%d",
	"/truncated/x?fail=%d",
	"/garbage-status/x?fail=%d",
	"/blackhole/x?fail=%d",
}

// soakBudget turns the retry quota off for the soak. Most of its paths fail
// on purpose, and at concurrency 256 the calls in the middle of their
// retries hold more than the standard-mode quota's 500 (10 a retry after a
// timeout or a broken connection): the quota drains by design, as it does
// against a server that is down, and the soak would measure the quota
// instead of the engine. MaxAttempts still bounds every request's retries;
// the quota has its own tests (budget_test.go).
var soakBudget = engine.Budget{Disabled: true}

func TestSoakRandomFaults(t *testing.T) {
	n, conc := 5_000, 256
	if *soak {
		n = 200_000
	}
	srv, err := faultserver.Start()
	require.NoError(t, err)

	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)

	// An attempt may take a second: under -race on one busy CPU, 256
	// attempts at once take longer than 200ms to be served, and the
	// timeouts they meet are the machine's, not the faults'.
	e, err := engine.New(engine.Config{BaseURL: srv.URL, Workers: conc, QueueSize: 4 * conc,
		Timeout: time.Second, Retry: engine.Retry{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, Budget: soakBudget}})
	require.NoError(t, err)

	var ok, failed, next atomic.Int64
	var causesMu sync.Mutex
	causes := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				// Each request has a path of its own, so "fail=N" makes its
				// first N attempts meet the fault.
				p, q, _ := strings.Cut(soakPaths[rand.IntN(len(soakPaths))], "?")
				path := fmt.Sprintf("%s-%d", p, i)
				if q != "" {
					if strings.Contains(q, "%d") {
						q = fmt.Sprintf(q, rand.IntN(3))
					}
					path += "?" + q
				}
				var req *requests.Request
				switch rand.IntN(3) {
				case 0:
					req = requests.New("GET", path)
				case 1:
					req = requests.New("POST", path, requests.WithBytes([]byte("{}"), "application/json"))
				default:
					req = requests.New("POST", path, requests.WithBytes([]byte("{}"), "application/json"), requests.WithIdempotencyKey(fmt.Sprint(i)))
				}
				ctx, cancel := context.WithCancel(context.Background())
				f := e.Submit(ctx, req)
				if rand.IntN(20) == 0 {
					cancel() // some callers give up
				}
				select {
				case <-f.Done():
				case <-time.After(30 * time.Second):
					t.Errorf("request %d never resolved", i)
				}
				if _, err := f.Await(ctx); err != nil {
					failed.Add(1)
					causesMu.Lock()
					k := soakCause(err)
					causes[k]++
					if !errors.Is(err, context.Canceled) && causes[k] <= 2 {
						// A sample of each cause other than the callers
						// who gave up on purpose.
						t.Logf("%s %s: %v", req.Method, path, err)
					}
					causesMu.Unlock()
				} else {
					ok.Add(1)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	st := e.Stats()
	require.NoError(t, e.Close())
	srv.Close()

	t.Logf("failures by cause: %v", causes)
	t.Logf("soak: %d requests in %s (%.0f/s): %d ok, %d failed, %d retries", n, took.Round(time.Millisecond),
		float64(n)/took.Seconds(), ok.Load(), failed.Load(), st.Retries)
	assert.EqualValues(t, n, st.Submitted)
	assert.EqualValues(t, n, ok.Load()+failed.Load(), "every future resolved")
	assert.Equal(t, ok.Load(), st.Completed)
	assert.Equal(t, failed.Load(), st.Failed)
	assert.Zero(t, engine.DoubleResolves(), "no future resolved twice")
	assert.Greater(t, ok.Load(), int64(n/2), "most requests get through the faults")

	// Back to baseline: goroutines at once, the heap after a collection.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseGoroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), baseGoroutines, "goroutines back to baseline")
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("heap: %d KiB before, %d KiB after", base.HeapAlloc>>10, after.HeapAlloc>>10)
	assert.Less(t, int64(after.HeapAlloc)-int64(base.HeapAlloc), int64(8<<20), "heap back to baseline")
}

// soakCause names what a failed soak request met, for the failures'
// tally: the retry quota, the caller's cancellation, the attempt timeout,
// or the transport's error without the request's URL.
func soakCause(err error) string {
	switch {
	case errors.Is(err, courerr.ErrRetryBudgetExhausted):
		return "retry budget exhausted"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "attempt timeout"
	}
	s := err.Error()
	if _, after, ok := strings.Cut(s, "): "); ok {
		s = after
	}
	if i := strings.Index(s, "read tcp"); i >= 0 {
		s = s[:i] // the ports differ every time
	}
	return s
}
