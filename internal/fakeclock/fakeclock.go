// Package fakeclock is a manual clock for courier's tests: time moves only
// when a test calls Advance. To learn that the code under test has set a
// timer, run the test in a testing/synctest bubble: after synctest.Wait,
// Pending lists every timer the code set.
package fakeclock

import (
	"sort"
	"sync"
	"time"
)

// Clock is a manual clock. The zero value is not usable; call New.
// Clock is safe for concurrent use.
type Clock struct {
	mu     sync.Mutex // protects the fields below
	now    time.Time
	timers []*timer
}

// New returns a clock that reads start until advanced.
func New(start time.Time) *Clock {
	return &Clock{now: start}
}

type timer struct {
	c    *Clock
	when time.Time
	ch   chan time.Time
	f    func()
	done bool // fired or stopped; protected by c.mu
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	t.c.remove(t)
	return true
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock reaches now+d.
func (c *Clock) NewTimer(d time.Duration) interface {
	C() <-chan time.Time
	Stop() bool
} {
	return c.add(d, nil)
}

// AfterFunc calls f in its own goroutine when the clock reaches now+d.
func (c *Clock) AfterFunc(d time.Duration, f func()) interface {
	C() <-chan time.Time
	Stop() bool
} {
	return c.add(d, f)
}

func (c *Clock) add(d time.Duration, f func()) *timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, when: c.now.Add(d), f: f}
	if f == nil {
		t.ch = make(chan time.Time, 1)
	}
	if d <= 0 {
		c.fire(t)
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// fire runs with c.mu held.
func (c *Clock) fire(t *timer) {
	t.done = true
	if t.f != nil {
		go t.f()
		return
	}
	t.ch <- c.now
}

func (c *Clock) remove(t *timer) {
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			break
		}
	}
}

// Advance moves the clock forward by d and fires every timer due by then,
// earliest first.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].when.Before(c.timers[j].when) })
	keep := c.timers[:0]
	for _, t := range c.timers {
		if !t.when.After(c.now) {
			c.fire(t)
			continue
		}
		keep = append(keep, t)
	}
	c.timers = keep
}

// Pending returns the waits of the timers that have not fired, from now,
// shortest first.
func (c *Clock) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Duration, 0, len(c.timers))
	for _, t := range c.timers {
		out = append(out, t.when.Sub(c.now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
