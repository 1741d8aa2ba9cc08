package main

import (
	"context"
	"fmt"
	"io"
	"net/http/httptrace"
	"os"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/latency"
)

// summary is what a run prints at the end. Every result line counts once
// in requests, and once in ok, failed or notSent: a line that never went
// out (interrupted while it waited, refused, or bad input) is not a failed
// request. Throughput and latencies are the answered lines'. The
// zero value is an empty summary; it is owned by the goroutine that writes
// the results.
type summary struct {
	requests, ok, failed, notSent int64
	sent, answered                int64 // reached the server at least once; got an HTTP answer
	elapsed                       time.Duration
	lat                           latency.Histogram // of the answered lines
	// misconfigured is the first refresh that the token endpoint refused
	// for the client's configuration (invalid_client...), nil if none.
	misconfigured *errors.RefreshError
}

// add counts the result line r of a request that ended with err, and
// returns the run's exit status with it: code, made 1 by a failure, 3
// once a request found the session expired, and 2 once the token
// endpoint refused the configuration (a wrong client secret is not an
// expired session).
func (s *summary) add(r *result, err error, code int) int {
	return s.count(r, err, code, false)
}

// count is add for a line whose request is known to have gone out when
// wrote is true, whatever r says: a request cut short in flight ends with
// its context's error, which tells no attempt.
func (s *summary) count(r *result, err error, code int, wrote bool) int {
	s.requests++
	sent := wrote || r.Attempts > 0 || r.Status > 0
	if sent {
		s.sent++
	}
	if r.Status > 0 {
		s.answered++
		s.lat.Add(time.Duration(r.DurationMS * float64(time.Millisecond)))
	}
	switch {
	case r.Error == "":
		s.ok++
		return code
	case sent:
		s.failed++
	default:
		s.notSent++
	}
	if re, ok := errors.AsType[*errors.RefreshError](err); ok && re.Misconfigured() {
		if s.misconfigured == nil {
			s.misconfigured = re
		}
		return exitUsage
	}
	switch {
	case code == exitUsage:
		return code
	case errors.Is(err, errors.ErrSessionExpired):
		return exitExpired
	case code == exitOK:
		return exitFailed
	}
	return code
}

// print writes the summary; throughput counts the answered requests.
func (s *summary) print(w io.Writer, st engine.Stats) {
	rate := 0.0
	if s.elapsed > 0 {
		rate = float64(s.answered) / s.elapsed.Seconds()
	}
	fmt.Fprintf(w, "requests    %d\n", s.requests)
	fmt.Fprintf(w, "ok          %d\n", s.ok)
	fmt.Fprintf(w, "failed      %d\n", s.failed)
	fmt.Fprintf(w, "not sent    %d\n", s.notSent)
	fmt.Fprintf(w, "sent        %d\n", s.sent)
	fmt.Fprintf(w, "answered    %d\n", s.answered)
	fmt.Fprintf(w, "retries     %d\n", st.Retries)
	fmt.Fprintf(w, "refreshes   %d\n", st.Refreshes)
	fmt.Fprintf(w, "dedup hits  %d\n", st.DedupHits)
	if st.CacheHits+st.CacheRevalidations > 0 {
		fmt.Fprintf(w, "cache hits  %d\n", st.CacheHits)
		fmt.Fprintf(w, "revalidated %d\n", st.CacheRevalidations)
		fmt.Fprintf(w, "from cache  %d bytes\n", st.CacheBytes)
	}
	fmt.Fprintf(w, "429s        %d\n", st.Throttled)
	fmt.Fprintf(w, "holds       %d\n", st.Holds)
	fmt.Fprintf(w, "elapsed     %s\n", s.elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "throughput  %.0f req/s answered\n", rate)
	fmt.Fprintf(w, "latency     p50 %s  p90 %s  p99 %s\n",
		round(s.lat.Quantile(0.50)), round(s.lat.Quantile(0.90)), round(s.lat.Quantile(0.99)))
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// progress is a progress bar on stderr, or nothing.
type progress struct{ bar *progressbar.ProgressBar }

// progressFlag defines --progress: on when stderr is a terminal unless the
// flag says otherwise (--progress, --progress=false).
func progressFlag(fs *pflag.FlagSet, v *bool) {
	fs.BoolVar(v, "progress", false, "progress bar on stderr (default: when stderr is a terminal; --progress=false to hide it)")
}

// newProgress shows a bar when --progress was given as true, or was not
// given and stderr is a terminal. total is -1 when unknown (a spinner with
// a count).
func newProgress(fs *pflag.FlagSet, on bool, total int64, stderr io.Writer, what string) *progress {
	if !fs.Changed("progress") {
		f, ok := stderr.(*os.File)
		on = ok && term.IsTerminal(int(f.Fd()))
	}
	if !on {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(false), // waits on Retry-After make guesses wild
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWidth(30),
	)}
}

func (p *progress) add() {
	if p.bar != nil {
		_ = p.bar.Add(1)
	}
}

func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

// sentTrace notes whether a request went out: its headers were written to
// a connection. Its hook runs on the transport's goroutine; wrote is read
// once the request's future is resolved.
type sentTrace struct {
	wrote atomic.Bool
	trace httptrace.ClientTrace
}

func newSentTrace() *sentTrace {
	t := &sentTrace{}
	t.trace.WroteHeaders = func() { t.wrote.Store(true) }
	return t
}

// context returns ctx with t's hook, for the request's attempts.
func (t *sentTrace) context(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &t.trace)
}

// explain says on w why the run ended with a configuration error, if it
// did.
func (s *summary) explain(w io.Writer, cmd string) {
	if re := s.misconfigured; re != nil {
		fmt.Fprintf(w, "courier %s: configuration error: the token endpoint answered %s: check --token-url or --refresh-path, --client-auth, COURIER_CLIENT_ID and COURIER_CLIENT_SECRET (%v)\n",
			cmd, re.Code, re)
	}
}
