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
	watches []streamWatch // nil fn: a free entry
	free    []int         // free entries of watches
}

// streamWatch is one entry of a streamCtx's table. gen tells the entry's
// successive users apart, so that a stop called late stops nothing else.
type streamWatch struct {
	fn  func()
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

// add runs fn once s ends, as context.AfterFunc would; the function it
// returns stops that, and reports whether it did.
func (s *streamCtx) add(fn func()) (stop func() bool) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		go fn()
		return func() bool { return false }
	}
	var i int
	if n := len(s.free); n > 0 {
		i, s.free = s.free[n-1], s.free[:n-1]
	} else {
		i = len(s.watches)
		s.watches = append(s.watches, streamWatch{})
	}
	w := &s.watches[i]
	w.fn = fn
	w.gen++
	gen := w.gen
	s.mu.Unlock()
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err != nil || s.watches[i].gen != gen || s.watches[i].fn == nil {
			return false
		}
		s.watches[i].fn = nil
		s.free = append(s.free, i)
		return true
	}
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
		if w.fn != nil {
			w.fn()
		}
	}
}

// watch arranges for fn to run once f's context ends, and keeps the means
// to stop it in f.w.stopWatch: an entry in a Stream's table, or a
// context.AfterFunc.
func watch(f *Future, fn func()) {
	if s, ok := f.ctx.(*streamCtx); ok {
		f.w.stopWatch = s.add(fn)
		return
	}
	f.w.stopWatch = context.AfterFunc(f.ctx, fn)
}
