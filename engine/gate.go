package engine

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/redact"
	"github.com/courier-go/courier/requests"
)

// The admission gate and the fast path.
//
// The dispatcher decides; it need not carry every request. While nothing
// needs its judgement (the session runs, no refresh is demanded or
// awaited, no token is known stale, nothing waits in the queue, the engine
// is not stopping) it opens the gate and lends its idle workers' places to
// the fast path. A request that finds the gate open and a place free takes
// the place and runs its first attempt at once: Submit puts the job in the
// place's worker slot, Do and the other synchronous entry points run it on
// the caller's goroutine (caller-runs, as an executor does when its pool
// has room). Either way the number of attempts running never exceeds
// Workers. A final outcome (a 2xx, or a failure no retry or refresh will
// change) is resolved by whoever ran the attempt, and the dispatcher never
// hears of it; any other outcome (a retry, a 401, a held host) is handed
// to the dispatcher with the place (adoptMsg), and from then on the call is
// the dispatcher's like any other. Requests that may be merged by dedup
// (a key) take the slow path: the dedup table is the dispatcher's.
//
// The protocol. Everything below is under gate.mu, except the lock-free
// read of word on the way in.
//
//	who                   reads / writes                      when
//	-------------------   ---------------------------------   ----------------------------------
//	dispatcher (steer)    opens word; lends its idle places    each wake-up, when nothing needs it
//	                      (idle); reclaims them once closed    and no closer blocks the gate
//	dispatcher (steer)    closes word                          when anything needs its judgement
//	closers: Shutdown,    block: close word, count a blocker   before they act; the dispatcher
//	Close, Terminate-     (blocks); unblock when done (the     cannot reopen while blocks > 0
//	Session, a fast 401,  dispatcher does, for a 401 and a
//	the token actor's     stale token, once it has heard)
//	staleEvent
//	entrant (enter)       reads word; takes a place from idle; only while word is open
//	                      registers its future in the place
//	                      (slot.fast); counts out
//	leaver (leave)        gives the place back to idle,        a final outcome, resolved by the
//	                      uncounts out; posts placeBackMsg     leaver itself
//	                      when the gate is closed, so the
//	                      dispatcher reclaims it
//	dispatcher (onAdopt)  takes the place back itself          an outcome that needs it
//	cancel-all (failAll,  reads slot.fast of every place;      after the gate is closed, so that
//	expire, Close)        cancels and fails those futures      nobody enters meanwhile
//	dispatcher (exit)     marks the gate dead, closes the      once; no job is sent after
//	                      workers' slots
//
// An entrant that sends a job (Submit) does so under mu once it has its
// place (send), so the send never meets a slot the dispatcher has closed;
// the slot is idle, so it never blocks. Whoever resolves a fast-path future does it by the claim of
// resolve.go: the one who ran the attempt, or cancel-all, whichever comes
// first.
type gate struct {
	// word is gateOpen, or 0; written under mu, read by entrants without
	// it (a closed word sends them to the slow path at once).
	word atomic.Uint32

	mu sync.Mutex // protects the fields below, and every slot's fast
	// idle holds the places lent to the fast path and free. Once the gate
	// closes the dispatcher takes them back.
	idle []*slot
	// out counts places taken by entrants, not yet given back (by leave
	// or with an adoptMsg).
	out    int
	blocks int  // closers holding the gate shut
	dead   bool // the dispatcher has exited: nothing is lent or sent again
}

const gateOpen = 1

// slowPathOnly sends every request through the dispatcher; set by tests
// (export_test.go) between runs of the whole suite, never while an engine
// runs.
var slowPathOnly bool

// enter takes a free place for f's first attempt, or returns nil when the
// gate is closed or every place is taken: f then takes the slow path.
func (g *gate) enter(f *Future) *slot {
	if g.word.Load() != gateOpen || slowPathOnly {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(g.idle)
	if g.word.Load() != gateOpen || n == 0 {
		return nil
	}
	s := g.idle[n-1]
	g.idle[n-1] = nil
	g.idle = g.idle[:n-1]
	g.out++
	s.fast = f
	return s
}

// send gives the job of f, which took place s, to the place's worker, and
// reports false, giving the place up, if the dispatcher has exited since.
func (g *gate) send(s *slot, f *Future) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		s.fast = nil
		g.out--
		return false
	}
	s.jobs <- fastJob(f) // the place is taken and its worker idle: never blocks
	return true
}

// leave gives back the place s, whose attempt is over. It reports whether
// the gate was closed, in which case it has told the dispatcher.
func (g *gate) leave(s *slot, d *dispatcher) {
	g.mu.Lock()
	s.fast = nil
	g.out--
	open := g.word.Load() == gateOpen
	if !g.dead {
		g.idle = append(g.idle, s)
	}
	g.mu.Unlock()
	if !open {
		d.post(placeBackMsg{}) // the dispatcher may be waiting for it
	}
}

// block closes the gate and keeps it closed until unblock.
func (g *gate) block() {
	g.mu.Lock()
	g.blocks++
	g.word.Store(0)
	g.mu.Unlock()
}

// unblock undoes one block; the dispatcher reopens the gate when nothing
// needs it (a closer that unblocks pokes it).
func (g *gate) unblock() {
	g.mu.Lock()
	g.blocks--
	g.mu.Unlock()
}

// placeBackMsg tells the dispatcher that a fast-path place came back to a
// closed gate.
type placeBackMsg struct{}

// adoptMsg hands the dispatcher a fast-path call whose outcome needs it,
// with the place that ran it. unblock is set when the sender blocked the
// gate (a 401) until the dispatcher has heard of it.
type adoptMsg struct {
	f       *Future
	s       *slot
	o       outcome
	unblock bool
}

// steer closes or opens the gate as the dispatcher's state requires, and
// moves idle places between the dispatcher and the fast path: lent while
// the gate is open, taken back once it is closed. It returns how many
// places the fast path still holds.
func (d *dispatcher) steer() int {
	g := &d.gate
	want := !d.paused && !d.closing && !d.refreshing && !d.demandPending &&
		!(d.stale != 0 && d.stale == d.gen) &&
		d.queue.live() == 0 && d.adm.quiet()
	g.mu.Lock()
	defer g.mu.Unlock()
	if !want || g.blocks > 0 || g.dead {
		g.word.Store(0)
		d.idle = append(d.idle, g.idle...)
		clear(g.idle)
		g.idle = g.idle[:0]
		return g.out
	}
	g.idle = append(g.idle, d.idle...)
	clear(d.idle)
	d.idle = d.idle[:0]
	if len(g.idle) > 0 {
		g.word.Store(gateOpen)
	}
	return g.out
}

// fastFutures returns the futures of every fast-path attempt running, for
// cancel-all; the caller has closed the gate.
func (d *dispatcher) fastFutures() []*Future {
	g := &d.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	var fs []*Future
	for _, s := range d.slots {
		if s.fast != nil {
			fs = append(fs, s.fast)
		}
	}
	return fs
}

// failFast cancels every fast-path attempt running and fails its
// waiters with err (see between), unless whoever runs it has resolved them
// already. The caller has closed the gate, so nobody joins them meanwhile.
func (d *dispatcher) failFast(err error) {
	for _, f := range d.fastFutures() {
		c := &f.w.own
		ws := []*Future{f}
		if shared(c) {
			ws = d.dedup.takeShared(c, false)
		}
		// c.attempts is the runner's: a fast-path call is on its first
		// attempt, which may have reached the server.
		rerr := &errors.RequestError{Method: c.req.MethodOrGet(), URL: redact.URL(&c.url), Attempts: 1, Err: err}
		for _, w := range ws {
			d.e.settleRaced(w, nil, rerr)
		}
		// Cancelled only once its waiters are failed: the runner of an
		// attempt cancelled first could resolve them with the
		// cancellation instead.
		c.ctx1.cancel(context.Canceled)
	}
}

// shared reports whether c, a fast-path call, is in the dedup table.
func shared(c *call) bool { return c.key != "" && c.stream == nil }

// onAdopt takes over a fast-path call whose first attempt needs the
// dispatcher's judgement, with the place that ran it.
func (d *dispatcher) onAdopt(m adoptMsg) {
	g := &d.gate
	g.mu.Lock()
	m.s.fast = nil
	g.out--
	g.mu.Unlock()
	d.idle = append(d.idle, m.s)
	if m.unblock {
		defer g.unblock() // after the 401 is known: refreshing holds the gate
	}
	f, c, o := m.f, &m.f.w.own, &m.o
	ws := []*Future{f}
	if shared(c) {
		// In the table's regime from now on, with every waiter it had.
		ws = d.dedup.takeShared(c, true)
	} else if f.resolved.Load() {
		ws = nil
	}
	if len(ws) == 0 {
		// Cancel-all failed it while the report was on its way, or every
		// waiter left.
		if o.live != nil {
			o.live.release()
		}
		return
	}
	c.seq = d.admitted
	d.admitted++
	c.waiters = append(c.w1[:0], ws...)
	c.state = stateRunning
	c.attempts = 1
	c.live = o.live
	d.link(c)
	for _, wf := range ws {
		wf.w.call = c
	}
	if !shared(c) {
		d.watch(f) // a shared call's waiters keep their watchers (leaveShared)
	}
	switch {
	case d.killed || d.paused:
		err := errors.ErrClosed
		if !d.killed {
			err = errors.ErrSessionExpired
		}
		d.finish(c, nil, d.between(c, err))
	default:
		d.onOutcome(o)
	}
	c.dropLive()
}

// admitFast fills in what the dispatcher's admission would for f's call,
// which runs its first attempt on the fast path. Its caller sets f's
// watcher (watchAlone, or leaveShared's).
func (e *Engine) admitFast(f *Future) {
	c := &f.w.own
	c.base, c.admitted = f.ctx, e.s.Clock.Now()
	c.base = detach(&c.detached, c.base)
	c.ctx1.parent = c.base
	c.ctx = nil
}

// watchAlone makes the end of f's context end the attempt of its call,
// which nobody can join.
func (e *Engine) watchAlone(f *Future) {
	if f.ctx.Done() != nil {
		watch(onEnd{kind: endAlone, e: e, f: f})
	}
}

// fastJob is the job of a fast-path call's first attempt.
func fastJob(f *Future) job {
	return job{c: &f.w.own, attempt: 1, ctx: &f.w.own.ctx1, first: f, fast: true}
}

// runFast runs f's first attempt in place s, taken by the caller (Do, a
// RoundTrip), and hands on its outcome.
func (e *Engine) runFast(s *slot, f *Future) {
	e.stats.inFlight.Add(1)
	j := fastJob(f)
	j.at = f.w.own.admitted // admitted a moment ago, on this goroutine
	o := e.attempt(j, &s.timer)
	e.endFast(s, j, o)
}

// endFast ends a fast-path attempt run in place s: a final outcome is
// resolved here and the place given back; any other goes to the
// dispatcher with the place.
func (e *Engine) endFast(s *slot, j job, o outcome) {
	f, c := j.first, j.c
	e.stats.inFlight.Add(-1)
	if shared(c) {
		e.endShared(s, f, o)
		return
	}
	f.w.stop.stop()
	if !e.final(c, &o) && f.ctx.Err() == nil {
		unblock := o.authFailed
		if unblock {
			// Close the gate before anyone else sends the rejected
			// token, until the dispatcher knows.
			e.d.gate.block()
		}
		if e.d.post(adoptMsg{f: f, s: s, o: o, unblock: unblock}) {
			return
		}
		if unblock {
			e.d.gate.unblock()
		}
		o = outcome{c: c, err: &errors.RequestError{Method: c.req.MethodOrGet(), URL: redact.URL(&c.url), Attempts: 1, Err: errors.ErrClosed}}
	}
	if o.err == nil {
		s.refunds.Add(1) // a first attempt's success refunds the retry budget
	}
	e.d.gate.leave(s, e.d)
	if !f.win() {
		if o.live != nil {
			o.live.release() // cancel-all failed it meanwhile
		}
		return
	}
	var resp *requests.Response
	err := o.err
	if err != nil && f.ctx.Err() != nil {
		err, o.resp = f.ctx.Err(), nil // the caller left, as on the slow path
		if o.live != nil {
			o.live.release()
			o.live = nil
		}
	}
	if o.resp != nil {
		resp = o.resp
		resp.Request = f.req
		resp.Duration = e.s.Clock.Now().Sub(c.admitted)
	}
	f.live = o.live
	e.deliver(f, resp, err)
}

// endShared is endFast for a call in the dedup table: every waiter still
// there gets a final outcome; any other goes to the dispatcher with them.
func (e *Engine) endShared(s *slot, f *Future, o outcome) {
	c := &f.w.own
	if !e.final(c, &o) {
		unblock := o.authFailed
		if unblock {
			e.d.gate.block() // see endFast
		}
		if e.d.post(adoptMsg{f: f, s: s, o: o, unblock: unblock}) {
			return
		}
		if unblock {
			e.d.gate.unblock()
		}
		o = outcome{c: c, err: &errors.RequestError{Method: c.req.MethodOrGet(), URL: redact.URL(&c.url), Attempts: 1, Err: errors.ErrClosed}}
	}
	if o.err == nil {
		s.refunds.Add(1)
	}
	e.d.gate.leave(s, e.d)
	e.resolveShared(c, e.d.dedup.takeShared(c, false), o.resp, o.err)
}

// final reports whether the dispatcher would resolve a first attempt's
// outcome o as it is (see onOutcome): no hold, no refresh, no retry.
func (e *Engine) final(c *call, o *outcome) bool {
	switch {
	case o.held > 0:
		return false
	case o.authFailed && !c.req.NoAuth && e.s.canRefresh():
		return false
	case o.err == nil:
		return true
	default:
		return !(o.retry && 1 < e.s.Retry.MaxAttempts)
	}
}
