package engine

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/redact"
	"github.com/courier-go/courier/requests"
)

// Messages to the dispatcher's inbox.
type (
	trySubmitMsg struct {
		f     *Future
		reply chan error
	}
	leaveMsg      struct{ f *Future }
	retryReadyMsg struct{ c *call }
	shutdownMsg   struct{}
	killMsg       struct{}
)

// Events from the token actor; tokenactor.go says when each is sent. The
// dispatcher learns the token generation and the session's state from
// them alone: refreshedEvent with started (SetTokens) ends a pause,
// expiredEvent starts one.
type (
	refreshedEvent struct {
		gen     uint64
		started bool // SetTokens: a session starts or goes on
		// done, when set, is closed once the dispatcher has resumed
		// (SetTokens waits for it).
		done chan struct{}
	}
	staleEvent         struct{ gen uint64 }
	refreshFailedEvent struct {
		gen uint64
		err error
	}
	expiredEvent struct {
		err error
		// done, when set, is closed once the dispatcher has failed what
		// was pending and paused (TerminateSession waits for it).
		done chan struct{}
	}
)

// dispatcher is the goroutine that owns the queue, the live list of the
// calls it carries, the parked set and the pause state; it steers the
// admission gate (gate.go) and shares the dedup table (dedup.go). It never does
// I/O and never blocks on anyone: it sleeps only when it has nothing to do,
// and every send it makes is a case of its one select or goes to a
// worker's slot that it knows is empty.
//
// Who talks to it, and how:
//   - Submit reserves a place in the queue and delivers its future to the
//     mailbox (mailbox.go); when the queue is full it waits to hand the
//     future over instead (admission.go). TrySubmit, leaving waiters,
//     backoff timers and the engine's methods post messages to the mailbox.
//   - A worker gets a job in its slot, runs the attempt, and delivers one
//     report to the mailbox. Until the dispatcher has taken it, the worker
//     is not idle and the call is not given to another worker.
//   - The token actor posts its events to the mailbox and receives demands
//     (the generation a refresh must pass) from the dispatcher.
//
// The dispatcher takes everything in the mailbox at once and handles the
// reports first, then the rest in the order delivered: a worker delivers
// its report before it wakes its caller, so the dispatcher always has the
// outcome of a request before anything its caller submits next.
type dispatcher struct {
	e *Engine

	// Set by newDispatcher; read by anyone.
	mb      *mailbox
	stopped chan struct{} // closed by the dispatcher when it exits
	adm     *admission    // how submissions get a place (admission.go says who touches what)
	queue   *queue        // the dispatcher's; its bound is adm's
	dedup   *dedupTable   // shared with the fast path, under its shards' locks (dedup.go)
	// gate is the admission gate and the places it lends (gate.go says
	// who may touch what).
	gate gate
	// terminating counts the TerminateSession calls under way: while it is
	// not 0 the dispatcher hands out no queued request (assign), since the
	// session's end is on its way to fail them.
	terminating atomic.Int32

	// Owned by the dispatcher goroutine: written and read by it alone.
	mail          mail    // the latest take from the mailbox, being handled
	slots         []*slot // one per worker
	idle          []*slot // workers waiting for a job, most recent last
	live          call    // sentinel of the list of every call not yet resolved
	liveN         int
	parked        map[*call]struct{}
	running       int  // jobs handed out whose report has not been taken
	paused        bool // session expired (the token actor said so): fail new submissions
	closing       bool // Shutdown called: refuse new submissions, drain
	killed        bool // Close called: refuse everything, exit
	demandPending bool
	demandGen     uint64
	admitted      uint64 // calls admitted so far, for call.seq
	// gen is the token generation as the token actor's events tell it
	// (refreshed, stale, refresh failed): the dispatcher never reads the
	// published snapshot. It may lag the snapshot by an event on its way,
	// which only keeps a request waiting, or replays one, a moment later.
	gen uint64
	// refreshing is set from the first 401 until the actor's answer: the
	// current token is known to be rejected, so queued requests that would
	// carry it wait instead of collecting 401s of their own.
	refreshing bool
	// stale is the generation the token actor said is past its known
	// expiry, 0 when none: the next request that would carry it demands a
	// refresh first and waits for it, like the requests behind it. A failed
	// refresh clears it, so a token is held back at most once.
	stale  uint64
	budget *budget
}

func newDispatcher(e *Engine) *dispatcher {
	d := &dispatcher{
		e:       e,
		gen:     firstGen,
		mb:      newMailbox(),
		stopped: make(chan struct{}),
		adm:     newAdmission(e.s.QueueSize),
		dedup:   newDedupTable(),
		parked:  make(map[*call]struct{}),
		budget:  newBudget(e.s.Retry.Budget),
	}
	d.queue = newQueue(d.adm, e.s.QueueSize)
	d.live.prev, d.live.next = &d.live, &d.live
	for range e.s.Workers {
		w := &slot{jobs: make(chan job, 1)}
		d.slots = append(d.slots, w)
		d.idle = append(d.idle, w)
	}
	d.steer() // open from the start: a new engine needs no judgement
	return d
}

// assign hands queued calls to idle workers, front of the queue first, to
// the worker that went idle last (its connection and caches are warm).
func (d *dispatcher) assign() {
	if d.terminating.Load() > 0 {
		return
	}
	for len(d.idle) > 0 {
		c := d.queue.peek()
		if c == nil || d.waitsForToken(c) {
			return
		}
		d.queue.popFront()
		w := d.idle[len(d.idle)-1]
		d.idle = d.idle[:len(d.idle)-1]
		c.state = stateRunning
		c.attempts++
		c.slot = w
		d.running++
		d.e.stats.queued.Add(-1)
		d.e.stats.inFlight.Add(1)
		if c.attempts == 1 {
			c.ctx = &c.ctx1
		} else {
			c.ctx = new(attemptCtx)
		}
		c.ctx.parent = c.base
		c.first = c.waiters[0]
		w.jobs <- job{c: c, attempt: int(c.attempts), ctx: c.ctx, first: c.first}
	}
}

// onReport takes a worker's report: the worker is idle again, and the call
// moves on unless it was resolved while the attempt ran.
func (d *dispatcher) onReport(o *outcome) {
	c := o.c
	d.running--
	d.idle = append(d.idle, c.slot)
	c.slot = nil
	c.ctx, c.first = nil, nil
	c.live = o.live
	d.onOutcome(o)
	c.dropLive() // not handed over: retried, parked, or resolved already
}

// waitsForToken reports whether c must wait in the queue for the refresh
// in progress, as parked calls wait: it would carry the token the server
// has just rejected, or one whose known expiry has passed (then it demands
// the refresh). Calls behind it wait too, so the queue stays in order; a
// call that sends no token goes ahead. ("Hold" is the pacer's word.)
func (d *dispatcher) waitsForToken(c *call) bool {
	if !c.sameOrigin || c.req.NoAuth {
		return false
	}
	if d.refreshing {
		return true
	}
	if d.stale != 0 && d.stale == d.gen {
		d.demand(d.gen)
		return true
	}
	return false
}

// demand asks the token actor for a generation past gen; the requests
// that would carry gen wait until it answers.
func (d *dispatcher) demand(gen uint64) {
	d.refreshing = true
	d.demandPending = true
	d.demandGen = max(d.demandGen, gen)
}

// link adds c to the live list.
func (d *dispatcher) link(c *call) {
	c.prev, c.next = d.live.prev, &d.live
	d.live.prev.next = c
	d.live.prev = c
	d.liveN++
}

// unlink removes c from the live list, once.
func (d *dispatcher) unlink(c *call) {
	if c.next == nil {
		return
	}
	c.prev.next, c.next.prev = c.next, c.prev
	c.prev, c.next = nil, nil
	d.liveN--
}

// post delivers m to the mailbox unless the dispatcher has stopped, and
// reports whether it was delivered. It never blocks. Used by timers,
// context watchers, the token actor and the engine's methods, never by the
// dispatcher itself.
func (d *dispatcher) post(m any) bool { return d.mb.post(m) }

// submit hands f, prepared by Submit, to the dispatcher: into the mailbox
// when the queue has room, else over the admission's hand-over once it
// has, or f fails when ctx ends or the engine stops first. While the
// session is expired or the engine shuts down, the hand-over takes it at
// once, to fail it.
func (d *dispatcher) submit(ctx context.Context, f *Future) {
	if d.adm.reserve() {
		if !d.mb.post(f) {
			d.adm.release()
			d.e.settle(f, nil, errors.ErrClosed)
		}
		return
	}
	if err := d.adm.await(ctx, f, d.mb, d.stopped); err != nil {
		d.e.settle(f, nil, err)
	}
}

func (d *dispatcher) run() {
	defer d.exit()
	for {
		d.mb.take(&d.mail)
		d.adm.tidy()
		d.handleMail()
		if d.killed {
			return
		}
		// Places come back from the fast path before assign needs them;
		// the gate reopens once the queue is empty again.
		d.steer()
		d.assign()
		if out := d.steer(); d.closing && d.liveN == 0 && d.running == 0 && out == 0 {
			return
		}
		// A Submit waits for room: keep a place for it while there is
		// one. A paused or closing engine takes it at once, to fail it.
		d.adm.keep()
		admit := d.adm.offer(d.paused || d.closing)
		var demand chan uint64
		if d.demandPending {
			demand = d.e.actor.demands
		}
		// Lazy reports can wait unless a worker is wanted or the engine is
		// draining. Stay up if a Submit began waiting for room after the
		// check above.
		eager := d.queue.live() > 0 || d.closing
		var waiters *admission
		if admit == nil && !d.adm.full() {
			waiters = d.adm
		}
		if !d.mb.sleep(eager, d.running, waiters) {
			continue
		}
		if admit == nil && demand == nil {
			<-d.mb.wake // the usual case, without a select
			continue
		}
		select {
		case <-d.mb.wake:
		case f := <-admit:
			d.onSubmit(f, d.adm.received())
		case demand <- d.demandGen:
			d.demandPending = false
		}
	}
}

// handleMail handles the latest take from the mailbox: reports first, so
// workers are idle again and outcomes known before what comes after; then
// submissions and messages in the order they came.
func (d *dispatcher) handleMail() {
	b := &d.mail
	for i := range b.reports {
		d.onReport(&b.reports[i])
	}
	for _, m := range b.msgs {
		if f, ok := m.(*Future); ok {
			d.onSubmit(f, true)
			continue
		}
		d.onMessage(m)
	}
	b.done()
}

// exit closes the mailbox and answers what was in it as a closed engine
// would, then stops the workers. A worker still running an attempt (Close
// cancelled it) finds the mailbox closed and answers for its report.
func (d *dispatcher) exit() {
	d.closing = true // what is left is refused
	d.mb.close()
	d.mb.take(&d.mail)
	d.handleMail()
	d.adm.close()
	close(d.stopped)
	g := &d.gate
	g.mu.Lock()
	g.dead = true
	g.word.Store(0)
	clear(g.idle)
	g.idle = nil
	for _, w := range d.slots {
		close(w.jobs) // the workers return; no entrant sends again (gate.go)
	}
	g.mu.Unlock()
}

func (d *dispatcher) onMessage(m any) {
	if d.killed {
		// After Close only the senders waiting for an answer get one.
		switch m := m.(type) {
		case trySubmitMsg:
			m.reply <- errors.ErrClosed
		case expiredEvent:
			if m.done != nil {
				close(m.done)
			}
		case refreshedEvent:
			if m.done != nil {
				close(m.done)
			}
		case adoptMsg:
			d.onAdopt(m) // fails it
		}
		return
	}
	switch m := m.(type) {
	case refreshedEvent, refreshFailedEvent, expiredEvent, staleEvent:
		d.onEvent(m)
	case trySubmitMsg:
		shared := false
		if m.f.w.own.key != "" {
			_, shared = d.dedup.lookup(m.f.w.own.key)
		}
		switch {
		case d.closing:
			m.reply <- errors.ErrClosed
		case d.paused:
			m.reply <- errors.ErrSessionExpired
		case m.f.w.own.key != "" && shared:
			m.reply <- nil
			d.onSubmit(m.f, false) // joins: takes no place
		case !d.adm.reserve():
			m.reply <- errors.ErrQueueFull
		default:
			m.reply <- nil
			d.onSubmit(m.f, true)
		}
	case leaveMsg:
		d.onLeave(m.f)
	case retryReadyMsg:
		if m.c.state == stateBackoff {
			m.c.state = stateQueued
			m.c.timer = nil
			d.queue.pushBack(m.c)
			d.e.stats.queued.Add(1)
		}
	case adoptMsg:
		d.onAdopt(m)
	case placeBackMsg:
		// steer takes the place back
	case shutdownMsg:
		d.closing = true
	case killMsg:
		// Fail everything now; what else is in this take is refused as
		// after Shutdown, and run exits.
		d.failAll(errors.ErrClosed)
		d.closing, d.killed = true, true
	default:
		panic(fmt.Sprintf("courier: dispatcher got unknown message %T", m))
	}
}

// onSubmit admits f. reserved says f holds a place in the queue (see
// admission.reserve), which it takes or gives back.
func (d *dispatcher) onSubmit(f *Future, reserved bool) {
	var err error
	switch {
	case d.closing:
		err = errors.ErrClosed
	case d.paused:
		err = errors.ErrSessionExpired
	default:
		err = f.ctx.Err()
	}
	if err != nil {
		if reserved {
			d.adm.release()
		}
		d.e.settle(f, nil, err)
		return
	}
	if key := f.w.own.key; key != "" && d.join(f, reserved) {
		return
	}
	c := &f.w.own
	c.base, c.admitted, c.seq = f.ctx, d.e.s.Clock.Now(), d.admitted
	d.admitted++
	c.w1[0] = f
	c.waiters = c.w1[:1]
	// The call outlives any one waiter: it keeps the first one's values
	// but not its cancellation.
	c.base = detach(&c.detached, c.base)
	f.w.call = c
	d.link(c)
	if reserved {
		d.queue.pushReserved(c)
	} else {
		d.queue.pushBack(c)
	}
	d.e.stats.queued.Add(1)
	d.watch(f)
}

// join merges f into the call in flight under its key, if there is one,
// and reports whether it did; else, unless f's call is streamed (a live
// body has one reader), it enters f's own call in the table, in the same
// step. A call on the fast path gets f in its fwait (dedup.go).
func (d *dispatcher) join(f *Future, reserved bool) bool {
	key := f.w.own.key
	sh := d.dedup.shard(key)
	sh.mu.Lock()
	c, ok := sh.m[key]
	if !ok {
		if f.w.own.stream == nil {
			sh.m[key] = &f.w.own
		}
		sh.mu.Unlock()
		return false
	}
	if reserved {
		d.adm.release()
	}
	if c.fastShared {
		d.e.joinShared(c, f)
		sh.mu.Unlock()
		return true
	}
	sh.mu.Unlock()
	c.waiters = append(c.waiters, f)
	f.w.call = c
	d.watch(f)
	d.e.stats.dedupHits.Add(1)
	d.e.tel.dedupJoined(f, c)
	return true
}

// watch makes f leave its call when its context ends.
func (d *dispatcher) watch(f *Future) {
	if f.ctx.Done() == nil {
		return // it never ends
	}
	watch(onEnd{kind: endLeave, e: d.e, f: f})
}

func (d *dispatcher) onLeave(f *Future) {
	c := f.w.call
	// The worker running c may be resolving f (its job's first waiter)
	// right now: whoever wins the claim resolves f, and a lost claim here
	// means f already has its answer and stays.
	if c == nil || !f.win() {
		return
	}
	d.drop(c, f)
	d.e.deliver(f, nil, f.ctx.Err())
	if len(c.waiters) == 0 {
		d.abandon(c)
	}
}

// drop removes f from c's waiters.
func (d *dispatcher) drop(c *call, f *Future) {
	for i, w := range c.waiters {
		if w == f {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			return
		}
	}
}

// abandon drops a call nobody waits for any more, cancelling its attempt.
func (d *dispatcher) abandon(c *call) {
	switch c.state {
	case stateQueued:
		d.queue.discard()
		d.e.stats.queued.Add(-1)
	case stateBackoff:
		if c.timer != nil {
			c.timer.Stop()
		}
	case stateParked:
		delete(d.parked, c)
	}
	c.state = stateDone
	if c.ctx != nil {
		c.ctx.cancel(context.Canceled) // the running attempt; its report comes later
	}
	d.unlink(c)
	if c.key != "" {
		d.dedup.remove(c)
	}
}

// finish resolves every waiter of c with the same result.
func (d *dispatcher) finish(c *call, resp *requests.Response, err error) {
	waiters := c.waiters
	c.waiters = nil
	d.abandon(c)
	for _, f := range waiters {
		// resp is the dispatcher's alone (a worker that resolved the first
		// waiter of a shared call kept the answer as it came for the
		// others): one waiter gets it, more get copies.
		r := resp
		if resp != nil {
			if len(waiters) > 1 {
				cp := *resp
				r = &cp
			}
			r.Request = f.req
			r.Duration = d.e.s.Clock.Now().Sub(c.admitted)
		}
		f.live, c.live = c.live, nil // a streamed call has one waiter
		if f == c.first {
			// Its worker may be resolving it right now: a lost claim means
			// the worker's answer stands and its report is on its way.
			d.e.settleRaced(f, r, err)
			continue
		}
		d.e.settle(f, r, err)
	}
}

// failAll fails every call not yet resolved, those running on the fast
// path included: it closes the gate first, so that none enters meanwhile.
func (d *dispatcher) failAll(err error) {
	d.gate.mu.Lock()
	d.gate.word.Store(0)
	d.gate.mu.Unlock()
	d.failFast(err)
	for d.live.next != &d.live {
		c := d.live.next
		d.finish(c, nil, d.between(c, err))
	}
	d.queue.drain()
}

// between returns err, a failure the dispatcher decided between attempts
// (a refresh that failed, the session's end, Close), for a call that has
// already been sent: as a *errors.RequestError that says how many attempts
// reached the server, the one running now included. A call never sent gets
// err as it is.
func (d *dispatcher) between(c *call, err error) error {
	if c.attempts == 0 {
		return err
	}
	return &errors.RequestError{Method: c.req.MethodOrGet(), URL: redact.URL(&c.url), Attempts: int(c.attempts), Err: err}
}

func (d *dispatcher) expire(cause error) {
	err := errors.ErrSessionExpired
	switch {
	case errors.Is(cause, errors.ErrSessionExpired):
		err = cause // a Refresher's own ErrSessionExpired: say it once
	case cause != nil:
		err = fmt.Errorf("%w: %w", errors.ErrSessionExpired, cause)
	}
	d.failAll(err)
	d.refreshing = false
	d.demandPending = false // nothing waits for it any more
	d.stale = 0
	if !d.paused {
		d.paused = true
		d.e.tel.sessionExpired()
		if fn := d.e.s.Auth.OnSessionExpired; fn != nil {
			d.e.hooks.push("OnSessionExpired", fn)
		}
		log := d.e.log // the dispatcher does no I/O: the hook goroutine writes
		d.e.hooks.push("log", func() { log.Warn().Err(cause).Msg("session expired") })
	}
}

func (d *dispatcher) onEvent(ev any) {
	switch ev := ev.(type) {
	case refreshedEvent:
		d.gen = max(d.gen, ev.gen)
		if ev.started {
			d.paused = false
		}
		if ev.done != nil {
			close(ev.done)
		}
		// A token from before the latest demand (SetTokens racing a 401)
		// does not end the wait for the refresh that demand asked for.
		d.refreshing = d.refreshing && ev.gen <= d.demandGen
		// Replay in the order the calls were submitted: each goes to the
		// front, so the latest goes first.
		var due []*call
		for c := range d.parked {
			if c.gen < ev.gen {
				due = append(due, c)
			}
		}
		slices.SortFunc(due, func(a, b *call) int { return cmp.Compare(b.seq, a.seq) })
		for _, c := range due {
			d.replay(c)
		}
	case staleEvent:
		d.gen = max(d.gen, ev.gen)
		d.stale = ev.gen
		d.gate.unblock() // the actor blocked it (tell); stale keeps it shut
	case refreshFailedEvent:
		d.gen = max(d.gen, ev.gen)
		d.refreshing = false
		d.stale = 0 // held back once; now the server decides
		for c := range d.parked {
			if c.gen <= ev.gen {
				d.finish(c, nil, d.between(c, fmt.Errorf("%w: %w", errors.ErrRefreshFailed, ev.err)))
			}
		}
	case expiredEvent:
		d.expire(ev.err)
		if ev.done != nil {
			close(ev.done)
		}
	default:
		panic(fmt.Sprintf("courier: dispatcher got unknown event %T", ev))
	}
}

// replay sends a call again, ahead of the queue, after the token it was
// rejected with has been replaced.
func (d *dispatcher) replay(c *call) {
	delete(d.parked, c)
	c.replays++
	c.replayAttempt = c.attempts + 1
	c.state = stateQueued
	d.queue.pushFront(c)
	d.e.stats.queued.Add(1)
}

func (d *dispatcher) onOutcome(o *outcome) {
	c := o.c
	if c.state != stateRunning {
		return // resolved while the attempt ran
	}
	s := d.e.s
	if o.held > 0 {
		// Not sent: the call waits out its host's hold off the workers,
		// and the attempt it did not make is not counted.
		c.attempts--
		if c.attempts == 0 {
			// The first attempt's context serves the first attempt
			// that is sent; this one made no request with it.
			c.ctx1 = attemptCtx{}
		}
		c.state = stateBackoff
		c.timer = s.Clock.AfterFunc(o.held, func() { d.post(retryReadyMsg{c}) })
		return
	}
	c.gen = o.gen
	switch {
	case o.authFailed && !c.req.NoAuth && s.canRefresh() && !d.paused &&
		(c.attempts != c.replayAttempt || c.replays < maxReplays):
		if d.gen > o.gen {
			d.replay(c) // someone refreshed while this attempt ran
			return
		}
		c.state = stateParked
		d.parked[c] = struct{}{}
		d.e.tel.parked(c, o.gen)
		d.demand(o.gen)
	case o.err == nil:
		d.budget.succeeded(c.retryCost)
		resp := o.resp
		if o.settled != nil {
			d.drop(c, o.settled) // the worker resolved it
			if c.key != "" {
				// resp is the settled waiter's: the others get the
				// answer as it came (worker.go, firstResponse).
				resp = nil
				if len(c.waiters) > 0 {
					cp := o.pristine
					resp = &cp
				}
			}
		}
		d.finish(c, resp, nil)
	case o.retry && c.retries+1 < s.Retry.MaxAttempts:
		d.scheduleRetry(c, o)
	default:
		d.finish(c, o.resp, o.err)
	}
}

func (d *dispatcher) scheduleRetry(c *call, o *outcome) {
	s := d.e.s
	var wait time.Duration
	if o.hasAfter {
		wait = o.retryAfter
		// Context deadlines are wall-clock instants, so this compares against
		// real time whatever the engine's clock.
		if dl, ok := d.deadline(c); ok && time.Until(dl) < wait {
			if he, isHTTP := o.err.(*errors.HTTPError); isHTTP {
				he.Reason = fmt.Sprintf("Retry-After wait of %s does not fit the deadline (%s left)", wait, time.Until(dl).Round(time.Millisecond))
			}
			d.finish(c, o.resp, o.err)
			return
		}
	} else {
		var perr error
		wait, perr = d.e.backoff(c.retries + 1)
		if perr != nil {
			d.finish(c, o.resp, perr)
			return
		}
	}
	for _, w := range d.slots {
		d.budget.refunded(w.refunds.Swap(0)) // first attempts that succeeded on the fast path
	}
	cost, ok := d.budget.withdraw(o.resp == nil)
	if !ok {
		d.e.tel.budgetRefused()
		d.finish(c, o.resp, fmt.Errorf("%w: %w", errors.ErrRetryBudgetExhausted, o.err))
		return
	}
	c.retryCost += cost
	c.retries++
	d.e.stats.retries.Add(1)
	d.e.tel.retryScheduled(c, o, wait)
	if log := d.e.log; log.GetLevel() <= zerolog.DebugLevel && zerolog.GlobalLevel() <= zerolog.DebugLevel {
		// The dispatcher does no I/O: the hook goroutine writes the line.
		method, path, attempt, cause := c.req.MethodOrGet(), c.url.Path, int(c.attempts), o.err
		d.e.hooks.push("log", func() {
			log.Debug().Str("method", method).Str("path", path).
				Int("attempt", attempt).Dur("wait", wait).AnErr("cause", cause).Msg("retry scheduled")
		})
	}
	c.state = stateBackoff
	c.timer = s.Clock.AfterFunc(wait, func() { d.post(retryReadyMsg{c}) })
}

// deadline returns the latest deadline among c's waiters, and false when
// any of them has none.
func (d *dispatcher) deadline(c *call) (time.Time, bool) {
	var latest time.Time
	for _, f := range c.waiters {
		dl, ok := f.ctx.Deadline()
		if !ok {
			return time.Time{}, false
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return latest, len(c.waiters) > 0
}
