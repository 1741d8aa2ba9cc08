package main

import (
	"bytes"
	"errors"
	"io"
	"runtime/trace"

	xtrace "golang.org/x/exp/trace"
)

// wakeups runs 2,000 calls of c from callers goroutines under the runtime
// tracer and returns the goroutine wake-ups per call: every transition of
// a goroutine from waiting to runnable (a channel, a lock, a WaitGroup),
// whoever it belongs to. net/http over the no-op transport makes none; each
// hand-over between goroutines makes one.
func wakeups(c client, callers int) float64 {
	const n = 2_000
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		return -1 // another tracer runs (-trace)
	}
	noopRun(c, callers, n)
	trace.Stop()
	r, err := xtrace.NewReader(&buf)
	if err != nil {
		panic(err)
	}
	count := 0
	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			panic(err)
		}
		if ev.Kind() != xtrace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != xtrace.ResourceGoroutine {
			continue
		}
		if from, to := st.Goroutine(); from == xtrace.GoWaiting && to == xtrace.GoRunnable {
			count++
		}
	}
	return float64(count) / n
}
