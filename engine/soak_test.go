package engine_test

import (
	"context"
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

	e, err := engine.New(engine.Config{BaseURL: srv.URL, Workers: conc, QueueSize: 4 * conc,
		Timeout: 200 * time.Millisecond, Retry: engine.Retry{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}})
	require.NoError(t, err)

	var ok, failed, next atomic.Int64
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
					if failed.Add(1) < 5 {
						t.Logf("%s %s: %v", req.Method, path, err)
					}
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
