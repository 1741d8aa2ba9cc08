package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// tailAPI answers every request after about base (uniform within ±10%),
// except one in stallEvery, which stalls for stall first (or until the
// request is cancelled); /down answers 503 at once. It counts what
// reaches it.
type tailAPI struct {
	base, stall time.Duration
	stallEvery  int
	calls, down atomic.Int64
}

func (s *tailAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/down" {
		s.down.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	s.calls.Add(1)
	d := s.base + time.Duration((rand.Float64()-0.5)*0.2*float64(s.base))
	if rand.IntN(s.stallEvery) == 0 {
		d = s.stall
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		w.Write([]byte(`{"ok":true}`))
	case <-r.Context().Done():
	}
}

// resilience measures hedging and the circuit breaker in real time,
// against a server in this process: what is measured is the server's
// stalls, not CPU.
func resilience() {
	fmt.Printf("## Hedging and the circuit breaker (courier alone, real time)\n\n")
	api := &tailAPI{base: 50 * time.Millisecond, stall: time.Second, stallEvery: 50}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	hs := &http.Server{Handler: api}
	go hs.Serve(ln)
	defer hs.Close()
	base := "http://" + ln.Addr().String()

	n, conc := 2000, 32
	if *quick {
		n = 300
	}
	fmt.Printf("%d GETs, %d at a time (no queueing: latency is the request's own), against a server that answers in 50 ms ±10%% and stalls 1 request in 50 for 1 s.\n\n", n, conc)
	fmt.Println("| configuration | p50 ms | p95 ms | p99 ms | max ms | p99 / p50 | hedges sent | upstream calls | extra calls | hedges won |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	var p99s []time.Duration
	for _, tc := range []struct {
		name  string
		hedge engine.Hedge
	}{
		{"no hedging", engine.Hedge{}},
		{"Hedge{Percentile: 95} (budget 5%)", engine.Hedge{Percentile: 95}},
	} {
		api.calls.Store(0)
		e, err := engine.New(engine.Config{BaseURL: base, HTTPClient: &http.Client{Transport: transport()},
			Workers: conc, Hedge: tc.hedge})
		if err != nil {
			panic(err)
		}
		lat, failed := closedBatch(e, n, conc)
		st := e.Stats()
		e.Close()
		if failed > 0 {
			fmt.Printf("(%d requests failed)\n", failed)
		}
		slices.Sort(lat)
		q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		calls := api.calls.Load()
		p99s = append(p99s, q(0.99))
		fmt.Printf("| %s | %s | %s | %s | %s | %.1f | %d (%.1f%%) | %d | %.1f%% | %d |\n", tc.name, ms(q(0.50)), ms(q(0.95)), ms(q(0.99)), ms(lat[len(lat)-1]),
			float64(q(0.99))/float64(q(0.50)), st.HedgesSent, 100*float64(st.HedgesSent)/float64(n), calls, 100*float64(calls-int64(n))/float64(n), st.HedgesWon)
	}
	fmt.Printf("\nHedging at the p95 cuts the batch's p99 by %.1f× (target: at least 5×, with no more than 6%% extra requests). Hedges sent counts every second copy the engine started; upstream calls, those that reached the server (a copy cancelled while it connected never does).\n\n", float64(p99s[0])/float64(p99s[1]))

	fmt.Println("| 300 GETs, 3 attempts each, to a server that answers 503 to all, 32 at a time | upstream calls | requests refused unsent |")
	fmt.Println("| --- | ---: | ---: |")
	for _, tc := range []struct {
		name string
		b    engine.Breaker
	}{
		{"no breaker (the retry budget alone)", engine.Breaker{}},
		{"Breaker{ConsecutiveFailures: 5}", engine.Breaker{ConsecutiveFailures: 5}},
	} {
		api.down.Store(0)
		e, err := engine.New(engine.Config{BaseURL: base, HTTPClient: &http.Client{Transport: transport()},
			Workers: 32, Retry: engine.Retry{MaxAttempts: 3}, Breaker: tc.b})
		if err != nil {
			panic(err)
		}
		submitAll(e, 300, func(int) string { return "/down" })
		st := e.Stats()
		e.Close()
		fmt.Printf("| %s | %d | %d |\n", tc.name, api.down.Load(), st.BreakerRejections)
	}
	fmt.Println()
}

// closedBatch sends n GETs through e from conc goroutines, each waiting
// for its answer before the next, and returns every request's latency.
func closedBatch(e *engine.Engine, n, conc int) ([]time.Duration, int) {
	var (
		next   atomic.Int64
		failed atomic.Int64
		mu     sync.Mutex
		lat    = make([]time.Duration, 0, n)
		wg     sync.WaitGroup
	)
	for range conc {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				start := time.Now()
				_, err := e.Do(context.Background(), requests.New("GET", "/items/"+strconv.FormatInt(i, 10)))
				d := time.Since(start)
				if err != nil {
					failed.Add(1)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, int(failed.Load())
}
