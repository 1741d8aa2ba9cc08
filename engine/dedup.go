package engine

import (
	"context"
	"hash/maphash"
	"sync"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// The dedup table: one for the engine, in shards, each under its own lock,
// so that the fast path (gate.go) and the dispatcher consult the same
// table, as singleflight's callers do its map.
//
// An entry is a call in flight under its key, in one of two regimes:
//   - the dispatcher's (fastShared false): joiners go through the
//     dispatcher, which appends them to call.waiters, as ever;
//   - the fast path's (fastShared true): the call runs its first attempt in
//     a lent place, and its waiters (its leader first) are in call.fwait,
//     under the shard's lock. A request that finds such an entry while the
//     gate is open joins it there itself; the dispatcher joins the ones
//     that reach it. A waiter whose context ends leaves fwait by itself
//     (leaveShared), and the last one to leave cancels the attempt.
//
// When the attempt ends, its runner takes fwait under the lock: a final
// outcome removes the entry and resolves every waiter; any other hands the
// call to the dispatcher (adoptMsg), which takes fwait under the lock and
// flips the entry to its own regime, in one step, so no joiner is lost
// between the two. Cancel-all takes fwait after closing the gate, so that
// nobody joins a call it fails.
//
// Lock order: a shard's lock, then gate.mu (an entrant inserting its call
// takes its place with the shard locked); never the other way.
type dedupTable struct {
	seed   maphash.Seed
	shards [dedupShards]dedupShard
}

const dedupShards = 32

type dedupShard struct {
	mu sync.Mutex       // protects m, and fastShared and fwait of its calls
	m  map[string]*call // the calls in flight, by key
	_  [cacheLine - 16]byte
}

func newDedupTable() *dedupTable {
	t := &dedupTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*call)
	}
	return t
}

func (t *dedupTable) shard(key string) *dedupShard {
	return &t.shards[maphash.String(t.seed, key)%dedupShards]
}

// lookup returns the call in flight under key, if any.
func (t *dedupTable) lookup(key string) (*call, bool) {
	sh := t.shard(key)
	sh.mu.Lock()
	c, ok := sh.m[key]
	sh.mu.Unlock()
	return c, ok
}

// remove deletes c's entry, if it is still c's.
func (t *dedupTable) remove(c *call) {
	sh := t.shard(c.key)
	sh.mu.Lock()
	if sh.m[c.key] == c {
		delete(sh.m, c.key)
	}
	sh.mu.Unlock()
}

// submitShared puts f, whose call has a dedup key, on the fast path: it
// joins the fast-path call in flight under its key, or takes a place and
// leads a call of its own, run by the place's worker, or with callerRuns
// by the caller itself (Do, when its context cannot end: a leader that
// cannot leave may hold its followers' attempt on its own goroutine). It
// reports false when f must take the slow path (the gate closed, no place
// free, or the key's call is the dispatcher's).
func (e *Engine) submitShared(f *Future, callerRuns bool) bool {
	c := &f.w.own
	sh := e.d.dedup.shard(c.key)
	sh.mu.Lock()
	if e.d.gate.word.Load() != gateOpen {
		sh.mu.Unlock()
		return false
	}
	if lead, ok := sh.m[c.key]; ok {
		joined := lead.fastShared // else the dispatcher joins it
		if joined {
			e.joinShared(lead, f)
		}
		sh.mu.Unlock()
		return joined
	}
	s := e.d.gate.enter(f)
	if s == nil {
		sh.mu.Unlock()
		return false
	}
	e.admitFast(f)
	if f.ctx.Done() != nil {
		// The attempt ends when its last waiter leaves, not its first.
		watch(onEnd{kind: endShared, e: e, f: f, c: c})
	}
	e.stats.inFlight.Add(1)
	if !callerRuns && !e.d.gate.send(s, f) {
		sh.mu.Unlock()
		e.stats.inFlight.Add(-1)
		e.settle(f, nil, errors.ErrClosed)
		return true
	}
	c.fastShared = true
	c.fwait = append(c.w1[:0], f)
	sh.m[c.key] = c
	sh.mu.Unlock()
	if callerRuns {
		e.endFast(s, fastJob(f), e.attempt(fastJob(f), &s.timer))
	}
	return true
}

// joinShared makes f a waiter of lead, a fast-path call; the caller holds
// lead's shard lock.
func (e *Engine) joinShared(lead *call, f *Future) {
	lead.fwait = append(lead.fwait, f)
	if f.ctx.Done() != nil {
		watch(onEnd{kind: endShared, e: e, f: f, c: lead})
	}
	e.stats.dedupHits.Add(1)
	e.tel.dedupJoined(f, lead)
}

// leaveShared makes f, whose context has ended, leave c. While c is on the
// fast path f leaves fwait and resolves itself, and the last to leave
// cancels the attempt; once the dispatcher has c, it hears of it as of
// any waiter.
func (e *Engine) leaveShared(c *call, f *Future) {
	sh := e.d.dedup.shard(c.key)
	sh.mu.Lock()
	if !c.fastShared {
		sh.mu.Unlock()
		e.d.post(leaveMsg{f}) // the dispatcher's, or over: onLeave knows
		return
	}
	i := -1
	for k, w := range c.fwait {
		if w == f {
			i = k
		}
	}
	if i < 0 {
		sh.mu.Unlock()
		return // resolved by cancel-all
	}
	c.fwait = append(c.fwait[:i], c.fwait[i+1:]...)
	last := len(c.fwait) == 0
	sh.mu.Unlock()
	if last {
		c.ctx1.cancel(context.Canceled)
	}
	if f.win() {
		e.deliver(f, nil, f.ctx.Err())
	}
}

// takeShared takes the waiters of c, a fast-path call, and leaves the
// entry to the dispatcher's regime (adopt) or removes it (the call is
// over).
func (t *dedupTable) takeShared(c *call, adopt bool) []*Future {
	sh := t.shard(c.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ws := c.fwait
	c.fwait, c.fastShared = nil, false
	if (!adopt || len(ws) == 0) && sh.m[c.key] == c {
		delete(sh.m, c.key)
	}
	return ws
}

// resolveShared resolves the waiters of a fast-path call with its final
// answer: one gets resp, the others copies.
func (e *Engine) resolveShared(c *call, ws []*Future, resp *requests.Response, err error) {
	for _, f := range ws {
		f.w.stop.stop()
		if !f.win() {
			continue
		}
		r := resp
		if resp != nil {
			if len(ws) > 1 {
				cp := *resp
				r = &cp
			}
			r.Request = f.req
			r.Duration = e.s.Clock.Now().Sub(c.admitted)
		}
		e.deliver(f, r, err)
	}
}
