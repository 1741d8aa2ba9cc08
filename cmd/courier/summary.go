package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/latency"
)

// summary is what a run prints at the end.
type summary struct {
	requests, ok, failed int64
	elapsed              time.Duration
	lat                  latency.Histogram
}

// add counts the result line r of a request that ended with err, and
// returns the run's exit status with it: code, made 1 by a failure, and 3
// once a request found the session expired.
func (s *summary) add(r *result, err error, code int) int {
	s.requests++
	s.lat.Add(time.Duration(r.DurationMS * float64(time.Millisecond)))
	if r.Error == "" {
		s.ok++
		return code
	}
	s.failed++
	switch {
	case errors.Is(err, errors.ErrSessionExpired):
		return exitExpired
	case code == exitOK:
		return exitFailed
	}
	return code
}

func (s *summary) print(w io.Writer, st engine.Stats) {
	rate := 0.0
	if s.elapsed > 0 {
		rate = float64(s.requests) / s.elapsed.Seconds()
	}
	fmt.Fprintf(w, "requests    %d\n", s.requests)
	fmt.Fprintf(w, "ok          %d\n", s.ok)
	fmt.Fprintf(w, "failed      %d\n", s.failed)
	fmt.Fprintf(w, "retries     %d\n", st.Retries)
	fmt.Fprintf(w, "refreshes   %d\n", st.Refreshes)
	fmt.Fprintf(w, "dedup hits  %d\n", st.DedupHits)
	fmt.Fprintf(w, "429s        %d\n", st.Throttled)
	fmt.Fprintf(w, "holds       %d\n", st.Holds)
	fmt.Fprintf(w, "elapsed     %s\n", s.elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "throughput  %.0f req/s\n", rate)
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
