package engine

import (
	"context"
	"sync"
	"time"
)

// streamCtx is the context of a Stream's requests: it ends when the
// stream does (its caller's context ends, or its consumer breaks out).
// The engine watches it without a context.AfterFunc per request (which
// would cost a context, a closure and an entry in the parent's children
// each): a request's watch is an entry in one table (add), and cancel runs
// every entry still there, one after the other, on the goroutine that
// cancels.
// Every watch the engine sets (see watch) only posts a message or cancels
// an attempt, so none of them blocks. Safe for concurrent use.
type streamCtx struct {
	parent     context.Context
	done       chan struct{}
	stopParent func() bool // stops watching parent; nil when it cannot end

	mu      sync.Mutex // protects the fields below
	err     error
	watches []streamWatch
	free    []int32 // free entries of watches
}

// streamWatch is one entry of a streamCtx's table. gen tells the entry's
// successive users apart, so that a stop called late stops nothing else.
type streamWatch struct {
	on  onEnd // kind 0: a free entry
	gen uint32
}

func newStreamCtx(parent context.Context) *streamCtx {
	s := &streamCtx{parent: parent, done: make(chan struct{})}
	if parent.Done() != nil {
		s.stopParent = context.AfterFunc(parent, func() { s.cancel(parent.Err()) })
	}
	return s
}

func (s *streamCtx) Deadline() (time.Time, bool) { return s.parent.Deadline() }
func (s *streamCtx) Done() <-chan struct{}       { return s.done }
func (s *streamCtx) Value(key any) any           { return s.parent.Value(key) }

func (s *streamCtx) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// add runs on once s ends, as context.AfterFunc would, and returns its
// entry's place and generation, which stop takes.
func (s *streamCtx) add(on onEnd) (i int32, gen uint32, added bool) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		go on.run()
		return 0, 0, false
	}
	if n := len(s.free); n > 0 {
		i, s.free = s.free[n-1], s.free[:n-1]
	} else {
		i = int32(len(s.watches))
		s.watches = append(s.watches, streamWatch{})
	}
	w := &s.watches[i]
	w.on = on
	w.gen++
	gen = w.gen
	s.mu.Unlock()
	return i, gen, true
}

// stop stops the watch that add put at i with gen, if it has not run, and
// reports whether it did.
func (s *streamCtx) stop(i int32, gen uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.watches[i].gen != gen || s.watches[i].on.kind == 0 {
		return false
	}
	s.watches[i].on = onEnd{}
	s.free = append(s.free, i)
	return true
}

// cancel ends s with err, once, and runs its watches.
func (s *streamCtx) cancel(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	close(s.done)
	watches := s.watches
	s.watches, s.free = nil, nil
	s.mu.Unlock()
	if s.stopParent != nil {
		s.stopParent()
	}
	for _, w := range watches {
		if w.on.kind != 0 {
			w.on.run()
		}
	}
}

// onEnd is what the end of a waiter's context does: a value, so that a
// Stream's table holds it without a closure per request.
type onEnd struct {
	kind endKind
	e    *Engine
	f    *Future
	c    *call // the fast-path shared call f waits on (endShared)
}

type endKind uint8

const (
	_         endKind = iota
	endLeave          // tell the dispatcher f leaves (leaveMsg)
	endShared         // f leaves c, a fast-path shared call (leaveShared)
	endAlone          // cancel the attempt of f's own call, which nobody joins
)

func (o onEnd) run() {
	switch o.kind {
	case endLeave:
		o.e.d.post(leaveMsg{o.f})
	case endShared:
		o.e.leaveShared(o.c, o.f)
	case endAlone:
		o.f.w.own.ctx1.cancel(context.Canceled)
	}
}

// watchStop stops a waiter's watch: an entry in a Stream's table, or a
// context.AfterFunc. The zero value stops nothing.
type watchStop struct {
	after func() bool
	sc    *streamCtx
	i     int32
	gen   uint32
}

func (w *watchStop) stop() bool {
	switch {
	case w.sc != nil:
		return w.sc.stop(w.i, w.gen)
	case w.after != nil:
		return w.after()
	}
	return false
}

// watch arranges for on to run once the context of its waiter, on.f,
// ends, and keeps the means to stop that in on.f.w.stop.
func watch(on onEnd) {
	f := on.f
	if s, ok := f.ctx.(*streamCtx); ok {
		if i, gen, added := s.add(on); added {
			f.w.stop = watchStop{sc: s, i: i, gen: gen}
		}
		return
	}
	f.w.stop = watchStop{after: context.AfterFunc(f.ctx, on.run)}
}
