// Command bench measures courier against raw net/http, resty v2 and
// go-retryablehttp in one run, with the server in a separate process, and
// prints markdown tables of ratios to net/http.
//
//	go -C bench run .            # the full run (about three minutes)
//	go -C bench run . -quick     # a smoke run
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/courier-go/courier/internal/latency"
)

var (
	quick    = flag.Bool("quick", false, "short measurements, for a smoke run")
	rounds   = flag.Int("rounds", 9, "paired rounds per measurement")
	duration = flag.Duration("duration", 500*time.Millisecond, "length of each closed-loop measurement")
	only     = flag.String("only", "", "run only these sections, comma separated: throughput, noop, openloop, scenarios, pacing, resilience, fetch, batch, fleet")
	cpuprof  = flag.String("cpuprofile", "", "write a CPU profile of the run here")
	only1    = flag.String("client", "", "measure only net/http and the clients whose name holds this (courier, resty, retryablehttp, failsafe), for profiling")
)

func main() {
	if os.Getenv(serveEnv) != "" {
		serve()
		return
	}
	flag.Parse()
	raiseFileLimit()
	if *quick {
		*rounds, *duration = 1, 100*time.Millisecond
	}
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	srv, err := startServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer srv.stop()

	fmt.Printf("# courier bench\n\n%s\n\n", machine())
	want := func(s string) bool { return *only == "" || strings.Contains(*only, s) }
	if want("throughput") {
		throughput(srv)
	}
	if want("noop") {
		noopTable()
	}
	if want("openloop") {
		openLoopTable(srv)
	}
	if want("scenarios") {
		scenarios(srv)
	}
	if want("pacing") {
		pacing()
	}
	if want("resilience") {
		resilience()
	}
	if want("fetch") {
		fetchComparison(srv)
	}
	if want("batch") {
		batchComparison()
	}
	if want("fleet") {
		fleetSection()
	}
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("Machine: %s, %d cores (GOMAXPROCS %d) shared by client and server processes; %s, Linux %s; %s.",
		model, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), strings.TrimSpace(string(kernel)), time.Now().UTC().Format("2006-01-02"))
}

// result of one closed-loop measurement.
type loopResult struct {
	rps    float64
	cpuPer time.Duration // this process's CPU time (user and system) per request
	lat    latency.Histogram
	errs   int64
}

// cpuTime is this process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// closedLoop runs conc goroutines calling do back to back for d.
func closedLoop(c client, conc int, d time.Duration) *loopResult {
	ctx := context.Background()
	var wg sync.WaitGroup
	hists := make([]latency.Histogram, conc)
	var n, errs atomic.Int64
	deadline := time.Now().Add(d)
	start, cpu0 := time.Now(), cpuTime()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := c.do(ctx); err != nil {
					errs.Add(1)
					continue
				}
				hists[g].Add(time.Since(t0))
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	r := &loopResult{rps: float64(n.Load()) / time.Since(start).Seconds(), errs: errs.Load()}
	if n.Load() > 0 {
		r.cpuPer = (cpuTime() - cpu0) / time.Duration(n.Load())
	}
	for i := range hists {
		r.lat.Merge(&hists[i])
	}
	return r
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// run measures c once: its own loop, or conc goroutines calling do.
func run(c client, conc int, d time.Duration) *loopResult {
	if c.loop != nil {
		return c.loop(conc, d)
	}
	return closedLoop(c, conc, d)
}

// spread formats the min, median and max of xs.
func spread(xs []float64) string { return spreadf(xs, "%.3f") }

func sortFloats(xs []float64) { sort.Float64s(xs) }

// throughput compares closed-loop throughput in paired rounds: each round
// measures a client next to net/http, alternating which goes first, and
// the ratio is taken within the pair, so load that comes and goes on the
// machine touches both sides of a ratio alike.
func throughput(srv *child) {
	fmt.Printf("## Closed loop: GET with a bearer token, 3 attempts configured\n\n")
	fmt.Printf("Paired rounds: each client runs %d rounds of %s, each next to a net/http round, alternating which goes first. "+
		"Ratio is client/net/http throughput within a pair, min / median / max over the pairs; CPU ratio is the median of the pairs' client CPU per request ratios "+
		"(the whole bench process, user and system). req/s and CPU µs/req are medians; latency is over all of a client's rounds.\n\n", *rounds, *duration)
	fmt.Println("| concurrency | client | req/s | ratio min / median / max | client CPU µs/req | CPU ratio | p50 ms | p99 ms | errors |")
	fmt.Println("| ---: | --- | ---: | :---: | ---: | ---: | ---: | ---: | ---: |")
	for _, conc := range []int{16, 64, 256} {
		cs := clients(srv.base, conc)
		for _, c := range cs {
			run(c, conc, *duration/4) // warm up: connections, pools
		}
		raw := cs[0]
		var rawRPS, rawCPU []float64
		var rawHist latency.Histogram
		var rawErrs int64
		type row struct {
			name                string
			rps, cpu, ratio, cr []float64
			hist                latency.Histogram
			errs                int64
		}
		var rows []*row
		for _, c := range cs[1:] {
			r := &row{name: c.name}
			for round := range *rounds {
				var a, b *loopResult // a: net/http, b: the client
				if round%2 == 0 {
					a, b = run(raw, conc, *duration), run(c, conc, *duration)
				} else {
					b, a = run(c, conc, *duration), run(raw, conc, *duration)
				}
				rawRPS = append(rawRPS, a.rps)
				rawCPU = append(rawCPU, us(a.cpuPer))
				rawHist.Merge(&a.lat)
				rawErrs += a.errs
				r.rps = append(r.rps, b.rps)
				r.cpu = append(r.cpu, us(b.cpuPer))
				r.ratio = append(r.ratio, b.rps/a.rps)
				r.cr = append(r.cr, float64(b.cpuPer)/float64(a.cpuPer))
				r.hist.Merge(&b.lat)
				r.errs += b.errs
			}
			rows = append(rows, r)
		}
		fmt.Printf("| %d | net/http | %.0f | 1 | %.1f | 1 | %s | %s | %d |\n", conc, median(rawRPS), median(rawCPU),
			ms(rawHist.Quantile(0.5)), ms(rawHist.Quantile(0.99)), rawErrs)
		for _, r := range rows {
			fmt.Printf("| %d | %s | %.0f | %s | %.1f | %.3f | %s | %s | %d |\n", conc, r.name, median(r.rps), spread(r.ratio), median(r.cpu), median(r.cr),
				ms(r.hist.Quantile(0.5)), ms(r.hist.Quantile(0.99)), r.errs)
		}
		for _, c := range cs {
			c.close()
		}
	}
	fmt.Println()
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// openLoop sends at a fixed rate whatever the answers do, and measures each
// request from when it was due, so a stall is not hidden by the requests it
// delayed (no coordinated omission).
func openLoop(c client, rate float64, d time.Duration) (*latency.Histogram, int64) {
	ctx := context.Background()
	n := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	var mu sync.Mutex
	var h latency.Histogram
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.do(ctx)
			lat := time.Since(due)
			if err != nil {
				errs.Add(1)
				return
			}
			mu.Lock()
			h.Add(lat)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return &h, errs.Load()
}

func openLoopTable(srv *child) {
	const rate = 2000
	d := 2 * *duration
	fmt.Printf("## Open loop: %d req/s for %s per round, latency from the due time\n\n", rate, d)
	fmt.Println("| client | p50 ms | p90 ms | p99 ms | p99 ratio | errors |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	cs := clients(srv.base, 256)
	hists := make([]latency.Histogram, len(cs))
	errs := make([]int64, len(cs))
	olRounds := min(*rounds, 3) // each round is 2s per client
	for round := range olRounds {
		for k := range cs {
			i := (round + k) % len(cs)
			h, e := openLoop(cs[i], rate, d)
			hists[i].Merge(h)
			errs[i] += e
		}
	}
	raw := hists[0].Quantile(0.99)
	for i, c := range cs {
		fmt.Printf("| %s | %s | %s | %s | %.2f | %d |\n", c.name, ms(hists[i].Quantile(0.5)), ms(hists[i].Quantile(0.9)),
			ms(hists[i].Quantile(0.99)), float64(hists[i].Quantile(0.99))/float64(raw), errs[i])
		c.close()
	}
	fmt.Println()
}

// buildBinaries builds the courier command and the hand-written fetcher.
func buildBinaries(dir string) (courier, hand string, err error) {
	courier, hand = filepath.Join(dir, "courier"), filepath.Join(dir, "handfetch")
	for _, b := range [][]string{{"build", "-C", "..", "-o", courier, "./cmd/courier"}, {"build", "-o", hand, "./handfetch"}} {
		cmd := exec.Command("go", b...)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return "", "", fmt.Errorf("go %s: %w", strings.Join(b, " "), err)
		}
	}
	return courier, hand, nil
}
