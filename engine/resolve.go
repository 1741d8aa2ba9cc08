package engine

import (
	"sync/atomic"

	"github.com/courier-go/courier/requests"
)

// Resolution: every future resolves exactly once. Whoever resolves one
// first claims it (the compare-and-swap on Future.resolved), then delivers
// its result; a claim that loses means someone else's answer stands. Each
// resolver below uses one of two claims: strict (claim, through settle),
// where nobody else can hold the future, so a lost claim is a bug, counted
// in doubleResolves; or raced (win, through settleRaced), where two
// resolvers may meet and the loser's answer is dropped.
//
//	who (goroutine)                 futures                       when                                      claim
//	------------------------------  ----------------------------  ----------------------------------------  ------
//	prepare (caller)                its own                       the request is invalid, before anyone      strict
//	                                                              else has seen the future
//	dispatcher.submit (caller)      its own                       refused while waiting for room             strict
//	TrySubmit (caller)              its own                       the mailbox is closed                      strict
//	dispatcher onSubmit             the one submitted             refused (closed, paused, its ctx ended)    strict
//	dispatcher finish               the waiters of its calls      final outcome, refresh failure, failAll    strict,
//	                                                                                                         raced for
//	                                                                                                         the job's
//	                                                                                                         first
//	dispatcher onLeave              the waiter leaving            its ctx ended                              raced
//	worker (slow-path job)          the job's first waiter        a 2xx read into memory                     raced
//	fast-path runner, endFast /     the call's waiters            a final first attempt (gate.go)            raced
//	endShared (caller or worker)
//	leaveShared (ctx watcher)       the waiter leaving a          its ctx ended while the call is on the     raced
//	                                fast-path call                fast path (dedup.go)
//	dispatcher failFast             the waiters of fast-path      cancel-all (Close, the session's end),     raced
//	                                calls                         after closing the gate
//
// Raced pairs: the worker against the dispatcher's finish and onLeave for
// a job's first waiter (the dispatcher learns the worker won from the
// report's settled); a fast-path runner against failFast and leaveShared.
// Nobody else resolves a future.

// claim reports whether this call may resolve f, which it then must do with
// publish; a second claim is a bug in the engine and is refused.
func (f *Future) claim() bool {
	if !f.resolved.CompareAndSwap(false, true) {
		doubleResolves.Add(1)
		return false
	}
	return true
}

// win is claim for a future another resolver may claim at the same moment
// (see the table): losing is expected, and the winner's answer stands.
func (f *Future) win() bool { return f.resolved.CompareAndSwap(false, true) }

// publish gives f its result and wakes its waiters.
func (f *Future) publish(resp *requests.Response, err error) {
	f.resp, f.err = resp, err
	f.mu.Lock()
	f.published = true
	if f.done != nil {
		close(f.done)
	}
	f.mu.Unlock()
	f.wg.Done()
}

// doubleResolves counts refused second resolutions; tests assert it stays 0.
var doubleResolves atomic.Int64

// settle resolves f and counts it; OnError sees it if it failed.
func (e *Engine) settle(f *Future, resp *requests.Response, err error) {
	f.w.stop.stop()
	if !f.claim() {
		return
	}
	e.deliver(f, resp, err)
}

// settleRaced is settle for a future that a worker may resolve at the same
// moment (its job's first waiter, on a 2xx answer): losing that claim is
// expected, not a second resolution, and the worker's answer stands.
func (e *Engine) settleRaced(f *Future, resp *requests.Response, err error) {
	f.w.stop.stop()
	if f.win() {
		e.deliver(f, resp, err)
	}
}

// deliver gives f, claimed by the caller, its result and counts it.
func (e *Engine) deliver(f *Future, resp *requests.Response, err error) {
	e.tel.endRequest(f, resp, err)
	// Count before waking the waiters, so a caller who has its result sees
	// it in Stats.
	if err == nil {
		e.stats.completed.Add(1)
		f.publish(resp, nil)
		return
	}
	e.stats.failed.Add(1)
	f.publish(resp, err)
	if fn := e.s.OnError; fn != nil {
		req := f.req
		e.hooks.push("OnError", func() { fn(req, err) })
	}
}
