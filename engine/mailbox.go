package engine

import (
	"sync"
)

// mailbox is the dispatcher's inbox. Anyone delivers to it: Submit its
// futures, workers their reports, and timers, context watchers, the token
// actor and the engine's methods their messages. Only the dispatcher takes
// from it, everything at once (take), so one wake-up serves every delivery
// made while it was busy.
//
// A delivery never blocks. It appends under mu and wakes the dispatcher
// only if it sleeps, with a token on wake. The protocol, all under mu:
//   - The dispatcher sleeps (sleep) only when the mailbox is empty: it sets
//     asleep, then waits on wake (and the few channels it also selects on).
//   - A delivery that finds asleep set clears it and sends one token, so
//     one sleep gets at most one token. The send does not block: if a token
//     is there already (the dispatcher woke by another case and slept
//     again), the one there does the job.
//   - take clears asleep: while the dispatcher is awake nobody sends.
//   - A lazy delivery (see report) wakes the dispatcher only if it asked
//     for everything at once when it slept (eager), or if it is the last
//     report of the jobs out when it slept, or if lazyLimit reports wait:
//     the lazy ones hold their calls (and their answers) until taken, so
//     an engine that goes idle, or a long wait, must not keep them.
//
// Once the dispatcher has exited (close), deliveries are refused and the
// deliverer answers for what it delivered.
type mailbox struct {
	wake chan struct{} // size one

	mu      sync.Mutex // protects the fields below
	reports []outcome  // workers' reports
	// msgs is everything else, in the order delivered: submitted futures
	// (*Future, each holding a reserved place in the queue) and messages.
	msgs   []any
	asleep bool // the dispatcher waits on wake and nobody has woken it
	eager  bool // set when it slept: lazy reports wake it too
	out    int  // jobs out when it slept, less the reports since
	closed bool // the dispatcher has exited
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

// post delivers a submitted future or any other message, and reports
// false once the dispatcher has exited.
func (m *mailbox) post(msg any) bool {
	m.mu.Lock()
	ok := !m.closed
	if ok {
		m.msgs = append(m.msgs, msg)
	}
	m.unlockAndWake(ok, false)
	return ok
}

// report delivers a worker's report, and reports false once the dispatcher
// has exited. A lazy report (a call its worker has resolved, with nothing
// else waiting on it) only gives the worker back and tidies up: it waits
// for the dispatcher's next wake-up, unless the dispatcher asked for every
// report at once (it has queued work for the worker, or is shutting down).
func (m *mailbox) report(o outcome, lazy bool) bool {
	m.mu.Lock()
	ok := !m.closed
	if ok {
		m.reports = append(m.reports, o)
		m.out--
	}
	m.unlockAndWake(ok, lazy)
	return ok
}

// poke wakes the dispatcher, if it sleeps, to look again at state it reads
// outside the mailbox (a Submit waiting for room).
func (m *mailbox) poke() {
	m.mu.Lock()
	m.unlockAndWake(true, false)
}

// unlockAndWake unlocks mu, after a delivery, and wakes the dispatcher if
// it sleeps and the delivery calls for it; only one deliverer per sleep
// does (it clears asleep). The token's send never blocks: if one is there
// already (the dispatcher woke by another case and slept again), that one
// does the job.
func (m *mailbox) unlockAndWake(delivered, lazy bool) {
	wake := delivered && m.asleep && (!lazy || m.eager || m.out <= 0 || len(m.reports) >= lazyLimit)
	if wake {
		m.asleep = false
	}
	m.mu.Unlock()
	if wake {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// done empties b once it is handled, so that it holds no call or answer
// until the next take.
func (b *mail) done() {
	clear(b.reports)
	clear(b.msgs)
	b.reports, b.msgs = b.reports[:0], b.msgs[:0]
}

// lazyLimit is how many lazy reports may wait for the dispatcher's next
// wake-up before one wakes it.
const lazyLimit = 16

// mail is one take from the mailbox.
type mail struct {
	reports []outcome
	msgs    []any
}

// take swaps everything delivered for b's slices, emptied by done, which
// the mailbox reuses. Called by the dispatcher only.
func (m *mailbox) take(b *mail) {
	m.mu.Lock()
	b.reports, m.reports = m.reports, b.reports[:0]
	b.msgs, m.msgs = m.msgs, b.msgs[:0]
	m.asleep = false
	m.mu.Unlock()
}

// sleep prepares the dispatcher to wait on wake, and reports false, not
// sleeping, if there is mail, or waiters (when given) counts a Submit that
// began waiting for room (see admission.await: it counts itself, then
// pokes). eager asks for lazy reports at once; out is how many jobs are
// out, each to be reported.
func (m *mailbox) sleep(eager bool, out int, waiters *admission) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.reports)+len(m.msgs) > 0 || (waiters != nil && waiters.waiting.Load() > 0) {
		return false
	}
	m.asleep, m.eager, m.out = true, eager, out
	return true
}

// close refuses every later delivery. Called by the dispatcher as it
// exits; what was delivered before is still to take.
func (m *mailbox) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
}
