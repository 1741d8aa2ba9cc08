// Handfetch is the hand-written baseline for `courier fetch`: what a Go
// programmer would write in an afternoon with net/http alone. It reads one
// path per line, GETs each with a bearer token from 16 goroutines, and
// writes one JSON line per request in input order (BENCH_CONCURRENCY sets
// another number of goroutines). No retries, no refresh,
// no dedup: the floor that courier's extra work is measured against.
//
//	BENCH_TOKEN=t handfetch BASE_URL < paths > results.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

type job struct {
	n    int
	path string
}

type result struct {
	Line       int             `json:"line"`
	Path       string          `json:"path"`
	Status     int             `json:"status"`
	DurationMS float64         `json:"duration_ms"`
	Body       json.RawMessage `json:"body,omitempty"`
	Error      string          `json:"error,omitempty"`
}

func main() {
	base, token := os.Args[1], os.Getenv("BENCH_TOKEN")
	t := http.DefaultTransport.(*http.Transport).Clone()
	conc := 16
	if n, err := strconv.Atoi(os.Getenv("BENCH_CONCURRENCY")); err == nil && n > 0 {
		conc = n
	}
	t.MaxIdleConnsPerHost = max(64, conc)
	client := &http.Client{Transport: t}
	jobs := make(chan job)
	results := make(chan result)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				results <- get(client, base, token, j)
			}
		}()
	}
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		n := 0
		for sc.Scan() {
			n++
			jobs <- job{n: n, path: sc.Text()}
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	// Write in input order: hold results that arrive early.
	w := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(w)
	pending := map[int]result{}
	next := 1
	for r := range results {
		pending[r.Line] = r
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			enc.Encode(r)
			w.Flush()
			next++
		}
	}
}

func get(c *http.Client, base, token string, j job) result {
	start := time.Now()
	r := result{Line: j.n, Path: j.path}
	req, err := http.NewRequest("GET", base+j.path, nil)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.Status = resp.StatusCode
	r.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		r.Error = err.Error()
	} else if json.Valid(body) {
		r.Body = body
	}
	if resp.StatusCode >= 300 {
		r.Error = fmt.Sprintf("status %d", resp.StatusCode)
	}
	return r
}
