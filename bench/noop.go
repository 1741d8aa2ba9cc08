package main

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/go-resty/resty/v2"
	"github.com/hashicorp/go-retryablehttp"
	resty3 "resty.dev/v3"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// noopCallers is how many goroutines call every client at once over the
// no-op transport; courier gets as many workers.
const noopCallers = 16

// noopClients are the libraries over the no-op transport, set up as for
// the network (a bearer token, three attempts), with courier's dedup off
// so every call is its own request.
func noopClients() []client {
	get := func(c *http.Client) func(context.Context) error {
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, "GET", "http://api.test/item", nil)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+token)
			return consume(c.Do(req))
		}
	}
	newEngine := func(dedup bool) *engine.Engine {
		e, err := engine.New(engine.Config{BaseURL: "http://api.test", HTTPClient: &http.Client{Transport: noop{}},
			Workers: noopCallers, Auth: engine.Auth{AccessToken: token}, Dedup: engine.Dedup{Disabled: !dedup}})
		if err != nil {
			panic(err)
		}
		return e
	}
	e, ed := newEngine(false), newEngine(true)
	// With dedup on every call gets a path of its own, so none is merged.
	// The paths (and URLs, for the RoundTripper) are made before the run,
	// as net/http's one path is: what is measured is the table's cost.
	const distinctPaths = 1 << 16 // far more than are ever in flight at once
	paths, urls := make([]string, distinctPaths), make([]string, distinctPaths)
	for i := range paths {
		paths[i] = "/item/" + strconv.Itoa(i)
		urls[i] = "http://api.test" + paths[i]
	}
	var seq atomic.Int64
	next := func() int { return int(seq.Add(1) & (distinctPaths - 1)) }
	distinct := func() string { return paths[next()] }
	distinctURL := func() string { return urls[next()] }
	hc, hcd := e.HTTPClient(), ed.HTTPClient()
	rtGet := func(c *http.Client, url func() string) func(context.Context) error {
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, "GET", url(), nil)
			if err != nil {
				return err
			}
			return consume(c.Do(req))
		}
	}
	item := func() string { return "http://api.test/item" }
	rc := resty.New().SetTransport(noop{}).SetBaseURL("http://api.test").SetAuthToken(token).SetRetryCount(2).SetDisableWarn(true)
	rc3 := resty3.New().SetTransport(noop{}).SetBaseURL("http://api.test").SetAuthToken(token).SetRetryCount(2).SetLoggerWarnLevel(true)
	rh := retryablehttp.NewClient()
	rh.HTTPClient = &http.Client{Transport: noop{}}
	rh.RetryMax, rh.Logger = 2, nil
	fs := &http.Client{Transport: failsafehttp.NewRoundTripper(noop{}, failsafehttp.NewRetryPolicyBuilder().WithMaxRetries(2).Build())}
	restyGet := func(get func(ctx context.Context) (int, error)) func(context.Context) error {
		return func(ctx context.Context) error {
			status, err := get(ctx)
			if err == nil && status != 200 {
				err = fmt.Errorf("status %d", status)
			}
			return err
		}
	}
	nop := func() {}
	return []client{
		{name: "net/http", do: get(&http.Client{Transport: noop{}}), close: nop},
		{name: "courier Do, dedup off", do: func(ctx context.Context) error {
			_, err := e.Do(ctx, requests.New("GET", "/item"))
			return err
		}, close: func() { e.Close() }},
		{name: "courier Do, dedup on", do: func(ctx context.Context) error {
			_, err := ed.Do(ctx, requests.New("GET", distinct()))
			return err
		}, close: func() { ed.Close() }},
		{name: "courier Submit/Await, dedup off", do: func(ctx context.Context) error {
			_, err := e.Submit(ctx, requests.New("GET", "/item")).Await(ctx)
			return err
		}, close: nop},
		{name: "courier Submit/Await, dedup on", do: func(ctx context.Context) error {
			_, err := ed.Submit(ctx, requests.New("GET", distinct())).Await(ctx)
			return err
		}, close: nop},
		{name: "courier RoundTripper, dedup off", do: rtGet(hc, item), close: nop},
		{name: "courier RoundTripper, dedup on", do: rtGet(hcd, distinctURL), close: nop},
		{name: "courier Stream, dedup off", close: nop, batch: func(n int) {
			streamN(e, n, func() string { return "/item" })
		}},
		{name: "courier Stream, dedup on", close: nop, batch: func(n int) {
			streamN(ed, n, distinct)
		}},
		{name: "resty v2", do: restyGet(func(ctx context.Context) (int, error) {
			r, err := rc.R().SetContext(ctx).Get("/item")
			return r.StatusCode(), err
		}), close: nop},
		{name: "resty v3", do: restyGet(func(ctx context.Context) (int, error) {
			r, err := rc3.R().SetContext(ctx).Get("/item")
			if err == nil {
				r.Bytes() // read, as every client's answer is
			}
			return r.StatusCode(), err
		}), close: func() { rc3.Close() }},
		{name: "go-retryablehttp", do: func(ctx context.Context) error {
			req, err := retryablehttp.NewRequestWithContext(ctx, "GET", "http://api.test/item", nil)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+token)
			return consume(rh.Do(req))
		}, close: nop},
		{name: "failsafe-go", do: get(fs), close: nop},
	}
}

// streamN sends n requests through one Stream, its window the default.
func streamN(e *engine.Engine, n int, path func() string) {
	reqs := func(yield func(*requests.Request) bool) {
		for range n {
			if !yield(requests.New("GET", path())) {
				return
			}
		}
	}
	for res := range e.Stream(context.Background(), reqs, 0) {
		if res.Err != nil {
			panic(res.Err)
		}
	}
}

// noopRun makes n calls of c from callers goroutines (a batch client
// makes them its own way) and returns the wall time and heap allocations
// per call.
func noopRun(c client, callers, n int) (ns, allocs float64) {
	if c.batch != nil {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		start := time.Now()
		c.batch(n)
		elapsed := time.Since(start)
		runtime.ReadMemStats(&m1)
		return float64(elapsed.Nanoseconds()) / float64(n), float64(m1.Mallocs-m0.Mallocs) / float64(n)
	}
	do := c.do
	ctx := context.Background()
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := do(ctx); err != nil {
					panic(err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	runtime.ReadMemStats(&m1)
	return float64(elapsed.Nanoseconds()) / float64(n), float64(m1.Mallocs-m0.Mallocs) / float64(n)
}

// noopTable measures what each client adds to net/http over a transport
// that answers at once, in paired rounds, one caller and noopCallers.
func noopTable() {
	n := 30_000
	if *quick {
		n = 2_000
	}
	cs := noopClients()
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()
	fmt.Printf("## Over a no-op transport: the client's own cost\n\n")
	fmt.Printf("%d calls per run, from 1 and from %d goroutines (the same for every client; courier has %d workers and dedup off); %d paired rounds next to net/http, alternating which goes first. "+
		"Added is the median over the pairs of the client's time per call minus net/http's (wall time: with %d callers on %d cores, the inverse of throughput); allocations are per call, net/http's included.\n\n",
		n, noopCallers, noopCallers, *rounds, noopCallers, runtime.GOMAXPROCS(0))
	fmt.Println("| callers | client | µs/call | added µs min / median / max | allocs/call | wake-ups/call |")
	fmt.Println("| ---: | --- | ---: | :---: | ---: | ---: |")
	for _, callers := range []int{1, noopCallers} {
		raw := cs[0]
		for _, c := range cs {
			noopRun(c, callers, n/10) // warm up
		}
		var rawNS, rawAllocs []float64
		type row struct {
			name              string
			ns, added, allocs []float64
		}
		var rows []*row
		for _, c := range cs[1:] {
			r := &row{name: c.name}
			for round := range *rounds {
				var a, b, aa, ba float64
				if round%2 == 0 {
					a, aa = noopRun(raw, callers, n)
					b, ba = noopRun(c, callers, n)
				} else {
					b, ba = noopRun(c, callers, n)
					a, aa = noopRun(raw, callers, n)
				}
				rawNS, rawAllocs = append(rawNS, a), append(rawAllocs, aa)
				r.ns, r.allocs = append(r.ns, b), append(r.allocs, ba)
				r.added = append(r.added, (b-a)/1000)
			}
			rows = append(rows, r)
		}
		fmt.Printf("| %d | net/http | %.2f | 0 | %.1f | %.2f |\n", callers, median(rawNS)/1000, median(rawAllocs), wakeups(raw, callers))
		for i, r := range rows {
			fmt.Printf("| %d | %s | %.2f | %s | %.1f | %.2f |\n", callers, r.name, median(r.ns)/1000, spreadf(r.added, "%.2f"), median(r.allocs), wakeups(cs[i+1], callers))
		}
	}
	fmt.Println()
}

// spreadf formats the min, median and max of xs with format f.
func spreadf(xs []float64, f string) string {
	s := append([]float64(nil), xs...)
	sortFloats(s)
	return fmt.Sprintf(f+" / "+f+" / "+f, s[0], s[len(s)/2], s[len(s)-1])
}
