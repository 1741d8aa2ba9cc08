package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/latency"
	"github.com/courier-go/courier/requests"
	"github.com/courier-go/courier/upload"
)

func scenarios(srv *child) {
	fmt.Printf("## Scenarios (courier alone)\n\n")
	fmt.Println("| scenario | measured | target |")
	fmt.Println("| --- | --- | --- |")
	n := 10_000
	if *quick {
		n = 1_000
	}
	uploadRSS(srv) // first, while the heap is small
	refreshStorm(srv, n)
	dedupStorm(srv, n)
	queuedMemory(100_000, false)
	queuedMemory(100_000, true)
	fmt.Println()
}

// batch submits n requests for path at once and awaits them all.
func batch(e *engine.Engine, path string, n int, opts ...requests.Option) (time.Duration, *latency.Histogram, int) {
	ctx := context.Background()
	futures := make([]*engine.Future, n)
	start := time.Now()
	for i := range futures {
		futures[i] = e.Submit(ctx, requests.New("GET", path, opts...))
	}
	var h latency.Histogram
	failed := 0
	for _, f := range futures {
		resp, err := f.Await(ctx)
		if err != nil {
			failed++
			continue
		}
		h.Add(resp.Duration)
	}
	return time.Since(start), &h, failed
}

func refreshStorm(srv *child, n int) {
	srv.call("/reset")
	hc := &http.Client{Transport: transport()}
	defer hc.CloseIdleConnections()
	e, err := engine.New(engine.Config{BaseURL: srv.base, HTTPClient: hc, Workers: 64, QueueSize: n,
		Auth: engine.Auth{AccessToken: "stale", RefreshToken: "r", Refresh: &engine.RefreshConfig{Path: "/auth/refresh"}}})
	if err != nil {
		panic(err)
	}
	defer e.Close()
	srv.call("/auth/expire") // nobody holds the valid token now
	drain, storm, failed := batch(e, "/auth/item", n, requests.WithoutDedup())
	refreshes := srv.stats()["refresh"]
	_, calm, _ := batch(e, "/auth/item", n, requests.WithoutDedup())
	added := storm.Quantile(0.99) - calm.Quantile(0.99)
	fmt.Printf("| refresh storm: %d concurrent requests on an expired token | %d refresh call(s); drained in %s; p99 %s ms vs %s ms with a valid token (+%s ms); %d failed | 1 refresh call |\n",
		n, refreshes, drain.Round(time.Millisecond), ms(storm.Quantile(0.99)), ms(calm.Quantile(0.99)), ms(added), failed)
}

func dedupStorm(srv *child, n int) {
	srv.call("/reset")
	hc := &http.Client{Transport: transport()}
	defer hc.CloseIdleConnections()
	e, err := engine.New(engine.Config{BaseURL: srv.base, HTTPClient: hc, Workers: 64, QueueSize: n, Auth: engine.Auth{AccessToken: token}})
	if err != nil {
		panic(err)
	}
	defer e.Close()
	drain, _, failed := batch(e, "/dedup", n)
	fmt.Printf("| dedup storm: %d identical GETs | %d upstream call(s); %d dedup hits; drained in %s; %d failed | 1 upstream call |\n",
		n, srv.stats()["dedup"], e.Stats().DedupHits, drain.Round(time.Millisecond), failed)
}

// gate holds every request until released, then answers at once.
type gate struct{ release chan struct{} }

func (g gate) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case <-g.release:
		return noop{}.RoundTrip(r)
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// queuedMemory measures the heap an engine holds per queued request,
// submitted with ctx as the caller's context (a cancellable one makes the
// engine watch it).
func queuedMemory(n int, cancellable bool) {
	g := gate{release: make(chan struct{})}
	e, err := engine.New(engine.Config{BaseURL: "http://bench.invalid", HTTPClient: &http.Client{Transport: g},
		Workers: 1, QueueSize: n})
	if err != nil {
		panic(err)
	}
	ctx, what := context.Background(), "context.Background"
	if cancellable {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		what = "a cancellable context"
	}
	reqs := make([]*requests.Request, n)
	before := heap()
	for i := range reqs {
		reqs[i] = requests.New("GET", "/items/"+strconv.Itoa(i))
	}
	built := heap()
	futures := make([]*engine.Future, n)
	for i, r := range reqs {
		futures[i] = e.Submit(ctx, r)
	}
	queued := heap()
	st := e.Stats()
	close(g.release)
	e.Close()
	runtime.KeepAlive(futures)
	per := float64(queued-built) / float64(n)
	fmt.Printf("| memory per queued request with %s, %d queued (%d in the queue) | %.0f bytes held by the engine (future and call, dedup key, context watch); %.0f more for the caller's Request | at most 1024 bytes |\n",
		what, n, st.Queued, per, float64(built-before)/float64(n))
}

// rss reads this process's resident set size.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func uploadRSS(srv *child) {
	size := int64(1 << 30)
	if *quick {
		size = 64 << 20
	}
	dir, err := os.MkdirTemp("", "courier-bench-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "big.bin")
	f, err := os.Create(path)
	if err != nil {
		panic(err)
	}
	f.Truncate(size) // sparse: real file reads, no disk used
	f.Close()
	srv.call("/reset")

	hc := &http.Client{Transport: transport()}
	defer hc.CloseIdleConnections()
	e, err := engine.New(engine.Config{BaseURL: srv.base, HTTPClient: hc, Auth: engine.Auth{AccessToken: token}, Timeout: 5 * time.Minute})
	if err != nil {
		panic(err)
	}
	defer e.Close()
	runtime.GC()
	before := rss()
	var peak atomic.Int64
	peak.Store(before)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if r := rss(); r > peak.Load() {
					peak.Store(r)
				}
			}
		}
	}()
	var b upload.Builder
	body, err := b.File("file", path).Build()
	if err != nil {
		panic(err)
	}
	start := time.Now()
	_, err = e.Upload(context.Background(), "/upload", body)
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		fmt.Printf("| upload RSS | failed: %v | |\n", err)
		return
	}
	fmt.Printf("| RSS growth during a %d MiB upload | %.1f MiB (RSS %d -> peak %d MiB); %d MiB received at %.0f MiB/s | at most 32 MiB |\n",
		size>>20, float64(peak.Load()-before)/(1<<20), before>>20, peak.Load()>>20, srv.stats()["uploaded"]>>20, float64(size>>20)/took.Seconds())
}

// fetchComparison runs `courier fetch` and the hand-written fetcher over the
// same input, taking turns.
func fetchComparison(srv *child) {
	lines := 30_000
	if *quick {
		lines = 2_000
	}
	dir, err := os.MkdirTemp("", "courier-bench-fetch-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	courier, hand, err := buildBinaries(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return
	}
	input := filepath.Join(dir, "input.txt")
	var sb strings.Builder
	for i := range lines {
		fmt.Fprintf(&sb, "/item?i=%d\n", i)
	}
	os.WriteFile(input, []byte(sb.String()), 0o600)

	run := func(name string, args []string, env ...string) time.Duration {
		in, _ := os.Open(input)
		defer in.Close()
		out, _ := os.Create(filepath.Join(dir, "out-"+filepath.Base(name)))
		defer out.Close()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, nil
		start := time.Now()
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", name, err)
		}
		return time.Since(start)
	}
	fmt.Printf("## `courier fetch` against a hand-written net/http fetcher\n\n")
	fmt.Printf("%d lines, results in input order to a file; %d paired rounds, alternating which goes first. "+
		"Ratio is the hand-written fetcher's time over courier's within a pair (above 1: courier is faster), min / median / max.\n\n", lines, *rounds)
	fmt.Println("| in flight | hand-written s | courier fetch s | courier lines/s | ratio min / median / max |")
	fmt.Println("| ---: | ---: | ---: | ---: | :---: |")
	for _, conc := range []int{16, 64} {
		var ht, ct, ratios []float64
		for round := range *rounds {
			var h, c time.Duration
			handRun := func() {
				h = run(hand, []string{srv.base}, "BENCH_TOKEN="+token, "BENCH_CONCURRENCY="+strconv.Itoa(conc))
			}
			courRun := func() {
				c = run(courier, []string{"fetch", "--base-url", srv.base, "--concurrency", strconv.Itoa(conc), "--summary=false"}, "COURIER_TOKEN="+token)
			}
			if round%2 == 0 {
				handRun()
				courRun()
			} else {
				courRun()
				handRun()
			}
			ht, ct = append(ht, h.Seconds()), append(ct, c.Seconds())
			ratios = append(ratios, h.Seconds()/c.Seconds())
		}
		fmt.Printf("| %d | %.2f | %.2f | %.0f | %s |\n", conc, median(ht), median(ct), float64(lines)/median(ct), spread(ratios))
	}
	fmt.Println()
}
