package engine

import (
	"context"
	stderrors "errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A call's base keeps its first waiter's values and none of its
// cancellation, exactly as context.WithoutCancel would, and the cause of
// the waiter's cancellation never shows through a context derived from it.
func TestDetachedBaseIsWithoutCancel(t *testing.T) {
	require.NotNil(t, cancelCtxKey, "the context package's cancel key was not learned")
	cause := stderrors.New("the caller gave up")
	parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), ctxKey{}, "v"))
	var d detachedCtx
	base := detach(&d, parent)
	assert.Same(t, &d, base, "a context that can end is detached in place")
	cancel(cause)

	assert.Nil(t, base.Done())
	assert.NoError(t, base.Err())
	assert.NoError(t, context.Cause(base))
	_, has := base.Deadline()
	assert.False(t, has)
	assert.Equal(t, "v", base.Value(ctxKey{}))

	// An attempt's context derived from it, cancelled on its own: its
	// cause is its own error, not the caller's.
	a := &attemptCtx{parent: base}
	a.cancel(context.DeadlineExceeded)
	assert.ErrorIs(t, context.Cause(a), context.DeadlineExceeded)
	child, stop := context.WithCancel(base)
	defer stop()
	assert.NoError(t, child.Err(), "a context derived from the base is not cancelled with the caller")
	stop()
	assert.ErrorIs(t, context.Cause(child), context.Canceled)

	// The same, as context.WithoutCancel gives it.
	ref := context.WithoutCancel(parent)
	refAttempt := &attemptCtx{parent: ref}
	refAttempt.cancel(context.DeadlineExceeded)
	assert.Equal(t, context.Cause(refAttempt), context.Cause(a))
}

// A context that cannot end is the base as it is: nothing to detach.
func TestDetachKeepsAContextThatCannotEnd(t *testing.T) {
	var d detachedCtx
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	assert.Equal(t, ctx, detach(&d, ctx))
	assert.Nil(t, d.parent)
}
