package engine

import "time"

// Clock is the engine's source of time: backoff, Retry-After waits, rate
// limiting and proactive token refresh all go through it, so tests can drive
// time by hand. Implementations must be safe for concurrent use. A nil
// Clock in [Config.Clock] means [SystemClock].
//
// Per-attempt timeouts are context deadlines and use real time.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends on C after d.
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f in its own goroutine after d. The returned timer's
	// C is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a [Clock]'s timer, shaped like [time.Timer]: C delivers the time
// it fired (nil for AfterFunc timers), and Stop prevents it from firing and
// reports whether it did so. It is an alias so that clocks in other packages
// can implement [Clock] without importing this one.
type Timer = interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the [Clock] backed by package time. It is the default.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return stdTimer{time.NewTimer(d)} }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer {
	return stdTimer{time.AfterFunc(d, f)}
}

type stdTimer struct{ t *time.Timer }

func (t stdTimer) C() <-chan time.Time { return t.t.C }
func (t stdTimer) Stop() bool          { return t.t.Stop() }
