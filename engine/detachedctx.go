package engine

import (
	"context"
	"time"
)

// detachedCtx is a call's base context: the first waiter's values without
// its cancellation, as context.WithoutCancel gives, but kept inside the
// call. context.WithoutCancel costs an allocation for the context, and one
// more each time its Value is asked (it hands itself to the context
// package's lookup as an interface, by value), and HTTP transports ask.
//
// The context package finds the nearest cancellable context with a Value
// lookup of a private key (context.Cause does it); a detached context must
// answer it with nothing, as WithoutCancel does, or the cause of the
// caller's cancellation would show through contexts that were never
// cancelled. cancelCtxKey is that key, learned once from context.Cause
// itself (see keyProbe); when it cannot be learned, detach falls back to
// context.WithoutCancel.
type detachedCtx struct {
	parent context.Context
}

func (*detachedCtx) Deadline() (deadline time.Time, ok bool) { return }
func (*detachedCtx) Done() <-chan struct{}                   { return nil }
func (*detachedCtx) Err() error                              { return nil }

func (d *detachedCtx) Value(key any) any {
	if key == cancelCtxKey {
		return nil
	}
	return d.parent.Value(key)
}

// detach makes d the base of a call whose first waiter has ctx, and
// returns the base: ctx itself when it cannot end.
func detach(d *detachedCtx, ctx context.Context) context.Context {
	if ctx.Done() == nil {
		return ctx
	}
	if cancelCtxKey == nil {
		return context.WithoutCancel(ctx)
	}
	d.parent = ctx
	return d
}

// keyProbe is a context that notes the key it is asked for and has no
// values, cancelled without a cause: context.Cause asks it for its Err and
// for the cancel key. Every method is its own, so that a context package
// that asks for more than that still finds a whole context.
type keyProbe struct{ key any }

func (*keyProbe) Deadline() (deadline time.Time, ok bool) { return }
func (*keyProbe) Done() <-chan struct{}                   { return closedChan }
func (*keyProbe) Err() error                              { return context.Canceled }
func (p *keyProbe) Value(key any) any                     { p.key = key; return nil }

var cancelCtxKey = func() (key any) {
	defer func() {
		if recover() != nil {
			key = nil // detach falls back to context.WithoutCancel
		}
	}()
	var p keyProbe
	_ = context.Cause(&p)
	return p.key
}()
