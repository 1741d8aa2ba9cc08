package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// attemptCtx is the context of one attempt: the call's values, cancelled
// when the attempt's time is up (by its worker's timer), when nobody waits
// for the call any more or the engine stops (by the dispatcher), or when
// the attempt is over (by the worker). It does the work of a
// context.WithTimeout without a timer of its own or a goroutine: the
// worker's one timer is re-armed for each attempt. Safe for concurrent use,
// as a context must be.
//
// An attemptCtx serves one attempt only: a call's first attempt uses the
// one inside the call, later attempts a new one, so an HTTP transport that
// still looks at an old attempt's context never sees a newer one's state.
type attemptCtx struct {
	parent context.Context // the call's base: values only, never cancelled

	mu       sync.Mutex // protects the fields below
	deadline time.Time  // zero until the worker arms its timer
	done     chan struct{}
	err      error
	afters   []func()  // registered by AfterFunc; nil entries were stopped
	after1   [1]func() // backing for the first one: the transport registers one per request
	// follower is a context that ends when this one does, until it stops
	// following (see follow); cancelled in line, without a goroutine.
	follower *attemptCtx
}

// closedChan is the Done channel of an attemptCtx cancelled before anyone
// asked for one.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (a *attemptCtx) Deadline() (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.deadline, !a.deadline.IsZero()
}

func (a *attemptCtx) Done() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		a.done = make(chan struct{})
	}
	return a.done
}

func (a *attemptCtx) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *attemptCtx) Value(key any) any { return a.parent.Value(key) }

// AfterFunc arranges for f to run in its own goroutine once a is
// cancelled, as context.AfterFunc does. The context package uses it to
// propagate the cancellation to derived contexts (the HTTP transport makes
// one per request) without a goroutine of its own.
func (a *attemptCtx) AfterFunc(f func()) (stop func() bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		go f()
		return func() bool { return false }
	}
	if a.afters == nil {
		a.afters = a.after1[:0]
	}
	i := len(a.afters)
	a.afters = append(a.afters, f)
	return func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.err != nil || a.afters[i] == nil {
			return false
		}
		a.afters[i] = nil
		return true
	}
}

// cancel ends a with err, once; later calls do nothing.
func (a *attemptCtx) cancel(err error) {
	a.mu.Lock()
	if a.err != nil {
		a.mu.Unlock()
		return
	}
	a.err = err
	if a.done == nil {
		a.done = closedChan
	} else {
		close(a.done)
	}
	afters, follower := a.afters, a.follower
	a.follower = nil
	a.mu.Unlock()
	if follower != nil {
		follower.cancel(err)
	}
	for _, f := range afters {
		if f != nil {
			go f()
		}
	}
}

// follow makes a end when p does, until unfollow: the context a streamed
// answer is read on follows its attempt's until the headers are in. A p
// ended already ends a at once.
func (a *attemptCtx) follow(p *attemptCtx) {
	p.mu.Lock()
	err := p.err
	if err == nil {
		p.follower = a
	}
	p.mu.Unlock()
	if err != nil {
		a.cancel(err)
	}
}

// unfollow detaches a from p, and reports whether p had not ended by then
// (if it had, it ended a too).
func (a *attemptCtx) unfollow(p *attemptCtx) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return false
	}
	if p.follower == a {
		p.follower = nil
	}
	return true
}

// expire cancels a with DeadlineExceeded if its deadline has passed.
func (a *attemptCtx) expire(now time.Time) {
	a.mu.Lock()
	due := !a.deadline.IsZero() && !now.Before(a.deadline)
	a.mu.Unlock()
	if due {
		a.cancel(context.DeadlineExceeded)
	}
}

// attemptTimer is a worker's timer: it bounds each attempt the worker runs
// with the attempt's timeout. Owned by its worker; the timer's function
// runs on its own goroutine and only reads cur.
type attemptTimer struct {
	t   *time.Timer
	cur atomic.Pointer[attemptCtx] // the attempt being timed, nil between attempts
}

// arm gives a a deadline d after now, the time as the caller has just
// read it, and starts timing it.
func (t *attemptTimer) arm(a *attemptCtx, d time.Duration, now time.Time) {
	a.mu.Lock()
	a.deadline = now.Add(d)
	a.mu.Unlock()
	t.cur.Store(a)
	if t.t == nil {
		t.t = time.AfterFunc(d, t.fire)
		return
	}
	t.t.Reset(d)
}

// disarm stops timing the current attempt.
func (t *attemptTimer) disarm() {
	if t.t != nil {
		t.t.Stop()
	}
	t.cur.Store(nil)
}

// fire runs when the timer goes off. A late fire meant for an earlier
// attempt finds a later attempt whose deadline has not passed, and leaves
// it alone.
func (t *attemptTimer) fire() {
	if a := t.cur.Load(); a != nil {
		a.expire(time.Now())
	}
}
