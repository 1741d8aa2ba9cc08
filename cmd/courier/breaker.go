package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
)

// breakerOptions is fetch's --breaker: a circuit breaker per host.
type breakerOptions struct {
	spec string // FAILURES[/WINDOW]
}

func (o *breakerOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.spec, "breaker", "", "a circuit breaker per host, FAILURES[/WINDOW]: after FAILURES failed attempts in a row (with /WINDOW, a duration such as 30s: FAILURES failed attempts within it) the host's lines fail at once for 30s, then a few probes go; failures are connection errors, timeouts and 5xx answers (default: none; with --redis the fleet shares each opening)")
}

// on reports whether --breaker was given.
func (o *breakerOptions) on() bool { return o.spec != "" }

// apply checks --breaker and sets cfg's breaker.
func (o *breakerOptions) apply(cfg *engine.Config) error {
	if o.spec == "" {
		return nil
	}
	n, window, hasWindow := strings.Cut(o.spec, "/")
	failures, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || failures < 1 {
		return fmt.Errorf("--breaker %q: FAILURES %q is not a whole number of failures, at least 1 (want FAILURES[/WINDOW], as in 5 or 20/30s)", o.spec, n)
	}
	if !hasWindow {
		cfg.Breaker = engine.Breaker{ConsecutiveFailures: failures}
		return nil
	}
	w, err := time.ParseDuration(strings.TrimSpace(window))
	if err != nil || w <= 0 {
		return fmt.Errorf("--breaker %q: WINDOW %q is not a duration above zero (want FAILURES[/WINDOW], as in 5 or 20/30s)", o.spec, window)
	}
	cfg.Breaker = engine.Breaker{Failures: failures, Window: w}
	return nil
}

// printBreaker writes the summary's breaker line.
func printBreaker(w io.Writer, st engine.Stats) {
	fmt.Fprintf(w, "breaker     %d trips, %d lines refused while open\n", st.BreakerTrips, st.BreakerRejections)
}
