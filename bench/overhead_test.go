package main

import (
	"context"
	"net/http"
	"syscall"
	"testing"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// rawGet is one request as a net/http user writes it: a bearer token, the
// body read and closed.
func rawGet(b *testing.B, c *http.Client) {
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://api.test/items/1", nil)
	req.Header.Set("Authorization", "Bearer token")
	if err := consume(c.Do(req)); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRawNoop is the baseline: net/http's Client over the no-op
// transport, with the bearer token set and the body read.
func BenchmarkRawNoop(b *testing.B) {
	c := &http.Client{Transport: noop{}}
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		rawGet(b, c)
	}
}

func noopEngine(b *testing.B, workers int) *engine.Engine {
	e, err := engine.New(engine.Config{
		BaseURL:    "http://api.test",
		HTTPClient: &http.Client{Transport: noop{}},
		Workers:    workers,
		Auth:       engine.Auth{AccessToken: "token"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

// BenchmarkEngineNoop is one request at a time through the whole engine:
// Submit, the dispatcher, a worker, the outcome, the future.
func BenchmarkEngineNoop(b *testing.B) { benchDoOneAtATime(b, requests.WithoutDedup()) }

// benchDoOneAtATime runs one Do at a time, of a GET made with opts, through
// an engine with one worker.
func benchDoOneAtATime(b *testing.B, opts ...requests.Option) {
	e := noopEngine(b, 1)
	ctx := context.Background()
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if _, err := e.Do(ctx, requests.New("GET", "/items/1", opts...)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEngineNoopParallel is many callers at once through 16 workers.
func BenchmarkEngineNoopParallel(b *testing.B) {
	e := noopEngine(b, 16)
	ctx := context.Background()
	b.ReportAllocs()
	defer cpuPerOp(b)()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.Do(ctx, requests.New("GET", "/items/1", requests.WithoutDedup())); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSubmitAwait submits batches of 64 futures, then awaits them.
func BenchmarkSubmitAwait(b *testing.B) {
	e := noopEngine(b, 16)
	ctx := context.Background()
	futures := make([]*engine.Future, 64)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	n := 0
	for b.Loop() {
		futures[n] = e.Submit(ctx, requests.New("GET", "/items/1", requests.WithoutDedup()))
		n++
		if n == len(futures) {
			for _, f := range futures {
				if _, err := f.Await(ctx); err != nil {
					b.Fatal(err)
				}
			}
			n = 0
		}
	}
	for _, f := range futures[:n] {
		f.Await(ctx)
	}
}

// BenchmarkDedupJoin is the cost of a request that joins one in flight.
func BenchmarkDedupJoin(b *testing.B) {
	g := gate{release: make(chan struct{})}
	e, err := engine.New(engine.Config{BaseURL: "http://api.test", HTTPClient: &http.Client{Transport: g}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	first := e.Submit(ctx, requests.New("GET", "/items/1"))
	futures := make([]*engine.Future, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		futures = append(futures, e.Submit(ctx, requests.New("GET", "/items/1")))
	}
	b.StopTimer()
	close(g.release)
	first.Await(ctx)
	for _, f := range futures {
		f.Await(ctx)
	}
	if hits := e.Stats().DedupHits; hits != int64(b.N) {
		b.Fatalf("dedup hits %d, want %d", hits, b.N)
	}
}

// BenchmarkRawNoopParallel is the parallel baseline.
func BenchmarkRawNoopParallel(b *testing.B) {
	c := &http.Client{Transport: noop{}}
	b.ReportAllocs()
	defer cpuPerOp(b)()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rawGet(b, c)
		}
	})
}

// cpuPerOp starts counting the process's CPU time (user and system) and
// its threads' voluntary context switches; the function it returns reports
// them per operation as cpu-ns/op and sleeps/op. On a shared machine they
// move less than wall time, and they count what a wall clock hides:
// goroutines handing work to each other across idle cores, where each
// hand-over may put a thread to sleep and wake another.
func cpuPerOp(b *testing.B) func() {
	var r0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	return func() {
		var r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		cpu := r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano()
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		b.ReportMetric(float64(r1.Nvcsw-r0.Nvcsw)/float64(b.N), "sleeps/op")
	}
}

// BenchmarkRoundTripperNoop is one request at a time through the engine's
// http.Client, as an SDK built on net/http sends it.
func BenchmarkRoundTripperNoop(b *testing.B) {
	c := noopEngine(b, 1).HTTPClient()
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://api.test/items/1", nil)
		if err := consume(c.Do(req)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEngineNoopDedup is EngineNoop with dedup on (the default GET):
// one call at a time, so none is merged and what shows is the table's cost.
func BenchmarkEngineNoopDedup(b *testing.B) { benchDoOneAtATime(b) }

// BenchmarkStreamNoop sends every call through one Stream, its window the
// default, 16 workers.
func BenchmarkStreamNoop(b *testing.B) {
	e := noopEngine(b, 16)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	reqs := func(yield func(*requests.Request) bool) {
		for range b.N {
			if !yield(requests.New("GET", "/items/1", requests.WithoutDedup())) {
				return
			}
		}
	}
	b.ResetTimer()
	for res := range e.Stream(context.Background(), reqs, 0) {
		if res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}
