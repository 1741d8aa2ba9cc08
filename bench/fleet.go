package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/fleet"
)

// fleetSection measures fleet mode on a private redis-server: what the
// fleet-wide limiter costs per attempt against the engine's local one,
// how closely eight `courier fetch` processes keep one fleet limit, and
// how fast a new token generation reaches every process of a fleet.
func fleetSection() {
	dir, err := os.MkdirTemp("", "courier-bench-fleet-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	fmt.Printf("## Fleet mode on Redis\n\n")
	rds, err := startRedis(dir)
	if err != nil {
		fmt.Printf("Not measured: %v.\n\n", err)
		return
	}
	defer rds.stop()
	fleetLimiterOverhead(rds)
	fleetConvergence(rds)
	courier, _, err := buildBinaries(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return
	}
	fleetAccuracy(rds, courier, dir)
}

// fleetLimiterOverhead times Limiter.Wait when the limit never makes it
// wait: what every attempt pays for fleet-wide pacing. Rounds alternate
// the local and the fleet limiter.
func fleetLimiterOverhead(rds *redisServer) {
	n := 20_000
	if *quick {
		n = 2_000
	}
	rdb, err := fleet.NewClient(rds.url())
	if err != nil {
		panic(err)
	}
	defer rdb.Close()
	fl, err := fleet.NewLimiter(rdb, "bench-overhead", fleet.LimiterOptions{})
	if err != nil {
		panic(err)
	}
	defer fl.Close()
	local := engine.NewLocalLimiter(nil)
	never := engine.Rate{PerSecond: 1e9, Burst: 1e6}
	key := engine.LimitKey{Host: "api.example"}

	run := func(l engine.Limiter, callers int) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for c := range callers {
			wg.Go(func() {
				for i := c; i < n; i += callers {
					if err := l.Wait(context.Background(), key, never); err != nil {
						panic(err)
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start) / time.Duration(n)
	}
	fmt.Printf("### Limiter overhead per attempt\n\n")
	fmt.Printf("`Limiter.Wait` with a limit that never makes it wait, %d calls per round, median of %d rounds (alternating); Redis CPU is the server's user+system time per call; Redis commands count the EVALSHA (one round trip) and the four commands its script runs.\n\n", n, *rounds)
	fmt.Println("| callers | local limiter µs/attempt | fleet limiter µs/attempt | added µs | Redis CPU µs/attempt | Redis commands/attempt |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, callers := range []int{1, 16} {
		var loc, flt, cpu, cmds []float64
		for range *rounds {
			loc = append(loc, us(run(local, callers)))
			c0, k0 := rds.cpu(), rds.commands()
			flt = append(flt, us(run(fl, callers)))
			cpu = append(cpu, us(rds.cpu()-c0)/float64(n))
			cmds = append(cmds, float64(rds.commands()-k0-1)/float64(n)) // less the INFO
		}
		fmt.Printf("| %d | %.2f | %.1f | %.1f | %.1f | %.2f |\n", callers, median(loc), median(flt), median(flt)-median(loc), median(cpu), median(cmds))
	}
	fmt.Println()
}

// fleetConvergence measures how long a new generation takes to reach every
// process: eight store handles (a client each) watch, one commits, and the
// time is until the last watcher has heard.
func fleetConvergence(rds *redisServer) {
	const procs = 8
	n := 50
	if *quick {
		n = 5
	}
	var stores []*fleet.TokenStore
	for range procs {
		rdb, err := fleet.NewClient(rds.url())
		if err != nil {
			panic(err)
		}
		defer rdb.Close()
		s, err := fleet.NewTokenStore(rdb, "bench-converge", fleet.StoreOptions{})
		if err != nil {
			panic(err)
		}
		stores = append(stores, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chans []<-chan uint64
	for _, s := range stores {
		chans = append(chans, s.Watch(ctx))
	}
	var times []time.Duration
	gen := uint64(0)
	for i := range n {
		l, err := stores[i%procs].Lock(ctx, time.Minute)
		if err != nil {
			panic(err)
		}
		start := time.Now()
		cur, ok, err := l.Commit(ctx, gen, engine.Tokens{AccessToken: fmt.Sprint("a", i), RefreshToken: fmt.Sprint("r", i)})
		if err != nil || !ok {
			panic(fmt.Sprint("commit: ", err))
		}
		gen = cur.Generation
		for _, ch := range chans {
			for g := range ch {
				if g >= gen {
					break
				}
			}
		}
		times = append(times, time.Since(start))
	}
	cancel()
	for _, ch := range chans {
		for range ch {
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	q := func(p float64) string { return ms(times[int(p*float64(len(times)-1))]) }
	fmt.Printf("### Refresh convergence\n\n")
	fmt.Printf("A new generation committed by one of %d processes (store handles with a client each), until the last one has heard of it by pub/sub; %d commits.\n\n", procs, n)
	fmt.Println("| p50 ms | p90 ms | max ms |")
	fmt.Println("| ---: | ---: | ---: |")
	fmt.Printf("| %s | %s | %s |\n\n", q(0.5), q(0.9), q(1))
}

// fleetAccuracy runs eight `courier fetch --redis` processes sharing a
// fleet limit against a server that counts per one-second window.
func fleetAccuracy(rds *redisServer, courier, dir string) {
	const procs, rate, burst = 8, 500, 10
	secs := 4
	if *quick {
		secs = 1
	}
	per := rate * secs / procs
	var mu sync.Mutex
	var windows []int
	var start time.Time
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		now := time.Now()
		if start.IsZero() {
			start = now
		}
		i := int(now.Sub(start) / time.Second)
		for len(windows) <= i {
			windows = append(windows, 0)
		}
		windows[i]++
		mu.Unlock()
		w.Write([]byte(`{}`))
	}))
	defer api.Close()
	var cmds []*exec.Cmd
	for p := range procs {
		var sb strings.Builder
		for i := range per {
			fmt.Fprintf(&sb, "/items/%d-%d\n", p, i)
		}
		in := filepath.Join(dir, fmt.Sprintf("fleet-%d.txt", p))
		if err := os.WriteFile(in, []byte(sb.String()), 0o600); err != nil {
			panic(err)
		}
		cmd := exec.Command(courier, "fetch", "--base-url", api.URL, "--redis", rds.url(), "--fleet", "bench-accuracy",
			"--rate", fmt.Sprint(rate), "--burst", fmt.Sprint(burst), "--summary=false", "--out", os.DevNull, in)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			panic(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		c.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	worst, full := 0, windows
	if len(full) > 2 {
		full = full[1 : len(full)-1] // the first and last windows are partial
	}
	sum := 0
	for _, n := range full {
		worst = max(worst, n)
		sum += n
	}
	fmt.Printf("### Limiter accuracy at %d processes\n\n", procs)
	fmt.Printf("%d `courier fetch --redis --rate %d --burst %d` processes, %d lines each, against a server counting per one-second window (from its first request).\n\n", procs, rate, burst, per)
	fmt.Println("| windows | busiest full window | mean of full windows | target |")
	fmt.Println("| --- | ---: | ---: | --- |")
	fmt.Printf("| %v | %d (%.3f of the limit) | %.0f | at most %d (5%% over the limit plus the burst) |\n\n",
		windows, worst, float64(worst)/rate, float64(sum)/float64(max(len(full), 1)), rate*105/100+burst)
}
