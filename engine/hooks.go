package engine

import (
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// hooks runs user callbacks (OnError, OnSessionExpired, OnTokenRefreshed)
// and the dispatcher's log lines on one goroutine, in the order they were
// pushed, so a slow or blocking callback or log writer never stalls the
// dispatcher or the token actor, and a callback may call the engine's
// methods. A panic in one is counted in [Stats].HookPanics and logged at
// error level; the hooks after it still run.
type hooks struct {
	log    *zerolog.Logger
	panics *atomic.Int64 // the engine's counter of hook panics

	mu      sync.Mutex // protects pending and stopped
	pending []hook
	stopped bool
	wake    chan struct{} // size 1: a pending-work signal
	stop    chan struct{}
}

type hook struct {
	name string
	fn   func()
}

func newHooks(log *zerolog.Logger, panics *atomic.Int64) *hooks {
	return &hooks{log: log, panics: panics, wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// push queues fn to run. After the runner has stopped, fn runs at once on
// the caller's goroutine, so nothing pushed is lost.
func (h *hooks) push(name string, fn func()) {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		h.call(hook{name, fn})
		return
	}
	h.pending = append(h.pending, hook{name, fn})
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// run calls hooks until stop is closed, then calls what is left and returns.
func (h *hooks) run() {
	for {
		select {
		case <-h.wake:
			h.flush(false)
		case <-h.stop:
			h.flush(true)
			return
		}
	}
}

func (h *hooks) flush(final bool) {
	for {
		h.mu.Lock()
		batch := h.pending
		h.pending = nil
		if final && len(batch) == 0 {
			h.stopped = true
		}
		h.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		for _, k := range batch {
			h.call(k)
		}
	}
}

// call runs one hook; a panic in it is counted and logged, never
// swallowed silently, and never kills the engine.
func (h *hooks) call(k hook) {
	defer func() {
		if v := recover(); v != nil {
			// Logged, then counted: a panic that Stats shows is in the log.
			h.log.Error().Str("hook", k.name).Interface("panic", v).Bytes("stack", debug.Stack()).Msg("panic in hook")
			h.panics.Add(1)
		}
	}()
	k.fn()
}
