package engine

import (
	"context"
	"sync/atomic"

	"github.com/courier-go/courier/errors"
)

// admission is how a submitted call gets a place in the queue: one type
// for the queue's bound, the hand-over of a Submit that waits for room, and
// the place the dispatcher keeps for it. (The fast path admits past it,
// under the gate, only while the queue is empty and nobody waits here:
// gate.go.)
//
// Who touches what:
//
//	field     written by                              read by
//	room      any goroutine: reserve and release      Submit, TrySubmit (through
//	          (Submit, TrySubmit, the dispatcher       the dispatcher), the
//	          giving back an unused place); the        dispatcher (full)
//	          queue takes and gives as calls enter
//	          and leave it
//	waiting   a Submit counts itself before it waits   the dispatcher (keep,
//	          on handoff and uncounts itself if it     tidy, quiet), the
//	          leaves; the dispatcher uncounts it as    mailbox (sleep)
//	          it receives it
//	handoff   a waiting Submit sends                   the dispatcher receives
//	spare     the dispatcher alone                     the dispatcher alone
//
// room is the bound less the live calls in the queue and the places
// reserved for admissions on their way. Requests already admitted (retries,
// replays) re-enter whatever it says (take), so it may go below zero:
// admitted work is never dropped.
//
// A Submit that finds no room counts itself in waiting, wakes the
// dispatcher, and waits to send its future on handoff. The dispatcher keeps
// a place for it (spare) as soon as one is free, and only then, or while
// the engine is paused or closing (to fail the future at once), does it
// receive on handoff. A place kept for a Submit that left is given back at
// the dispatcher's next wake-up (tidy), before anyone is refused for want
// of it.
type admission struct {
	room    atomic.Int64
	waiting atomic.Int32
	handoff chan *Future
	spare   bool
}

func newAdmission(limit int) *admission {
	a := &admission{handoff: make(chan *Future)}
	a.room.Store(int64(limit))
	return a
}

// reserve takes a place for an admission, if there is one: the caller then
// admits with queue.pushReserved or gives the place back with release.
// Safe from any goroutine.
func (a *admission) reserve() bool {
	if a.room.Add(-1) >= 0 {
		return true
	}
	a.room.Add(1)
	return false
}

// release gives back a place that reserve took. Safe from any goroutine.
func (a *admission) release() { a.room.Add(1) }

// full reports whether an admission would have to wait.
func (a *admission) full() bool { return a.room.Load() <= 0 }

// take and give are the queue's: a call entered it without a reserved
// place (a re-entry), or left it.
func (a *admission) take() { a.room.Add(-1) }
func (a *admission) give() { a.room.Add(1) }

// await waits, for Submit, until the dispatcher takes f on handoff: it
// returns nil then, ctx's error if ctx ends first, or ErrClosed once the
// dispatcher has exited (stopped). mb is the dispatcher's mailbox, poked
// so that a sleeping dispatcher looks at waiting.
func (a *admission) await(ctx context.Context, f *Future, mb *mailbox, stopped <-chan struct{}) error {
	// Counted while it waits: the dispatcher uncounts it as it receives f
	// (so that it never keeps a place for a Submit it has already
	// admitted), and it uncounts itself if it leaves.
	a.waiting.Add(1)
	mb.poke()
	select {
	case a.handoff <- f:
		return nil
	case <-ctx.Done():
		a.waiting.Add(-1)
		return ctx.Err()
	case <-stopped:
		a.waiting.Add(-1)
		return errors.ErrClosed
	}
}

// tidy gives back a place kept for a Submit that has left (its ctx ended).
// Dispatcher only.
func (a *admission) tidy() {
	if a.spare && a.waiting.Load() == 0 {
		a.release()
		a.spare = false
	}
}

// keep keeps a place for a waiting Submit while there is one. Dispatcher
// only.
func (a *admission) keep() {
	if !a.spare && a.waiting.Load() > 0 && a.reserve() {
		a.spare = true
	}
}

// offer is the channel the dispatcher receives waiting Submits on: handoff
// while it keeps a place, or when refuse says every Submit is to be taken
// at once, to fail it (a paused or closing engine); nil otherwise.
// Dispatcher only.
func (a *admission) offer(refuse bool) chan *Future {
	if a.spare || refuse {
		return a.handoff
	}
	return nil
}

// received uncounts a Submit the dispatcher took on handoff, and reports
// whether it came into the place kept for it (which it now holds).
// Dispatcher only.
func (a *admission) received() (reserved bool) {
	a.waiting.Add(-1)
	reserved, a.spare = a.spare, false
	return reserved
}

// quiet reports whether no Submit waits for room and no place is kept
// for one: the fast path may admit past the queue. Dispatcher only.
func (a *admission) quiet() bool { return a.waiting.Load() == 0 && !a.spare }

// close gives back the place kept, if any, as the dispatcher exits.
func (a *admission) close() {
	if a.spare {
		a.release()
		a.spare = false
	}
}
