package engine

import (
	"context"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type ctxKey struct{}

func TestAttemptContextTimesOutWithDeadlineExceeded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var timer attemptTimer
		defer timer.disarm()
		a := &attemptCtx{parent: context.WithValue(context.Background(), ctxKey{}, "v")}
		timer.arm(a, 5*time.Second, time.Now())
		dl, ok := a.Deadline()
		require.True(t, ok)
		assert.Equal(t, time.Now().Add(5*time.Second), dl)
		assert.Equal(t, "v", a.Value(ctxKey{}), "values come from the call's context")

		advance(4 * time.Second)
		assert.NoError(t, a.Err())
		advance(time.Second)
		<-a.Done()
		assert.ErrorIs(t, a.Err(), context.DeadlineExceeded)
	})
}

func TestAttemptTimerLeavesTheNextAttemptAloneAfterALateFire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var timer attemptTimer
		defer timer.disarm()
		first := &attemptCtx{parent: context.Background()}
		timer.arm(first, time.Second, time.Now())
		timer.disarm()
		second := &attemptCtx{parent: context.Background()}
		timer.arm(second, time.Minute, time.Now())
		timer.fire() // as a fire meant for the first attempt would
		assert.NoError(t, second.Err())
		assert.NoError(t, first.Err(), "a disarmed attempt is not timed out")
		advance(time.Minute) // and the timer's function runs
		assert.ErrorIs(t, second.Err(), context.DeadlineExceeded)
	})
}

// TestAttemptContextCancelsDerivedContextsWithoutAGoroutine pins that a
// context derived from an attempt's (the HTTP transport derives one per
// request) is cancelled through AfterFunc, not by a goroutine per request
// that the context package would otherwise start.
func TestAttemptContextCancelsDerivedContextsWithoutAGoroutine(t *testing.T) {
	a := &attemptCtx{parent: context.Background()}
	child, cancelChild := context.WithCancelCause(a)
	defer cancelChild(nil)
	other, cancelOther := context.WithCancel(a)
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	assert.NotContains(t, stacks, "propagateCancel", "deriving a context started a goroutine")
	cancelOther() // stops its AfterFunc
	assert.ErrorIs(t, other.Err(), context.Canceled)

	a.cancel(context.DeadlineExceeded)
	<-child.Done()
	assert.ErrorIs(t, child.Err(), context.DeadlineExceeded)
	assert.ErrorIs(t, context.Cause(child), context.DeadlineExceeded)

	late, cancelLate := context.WithCancel(a)
	defer cancelLate()
	<-late.Done() // derived after the end: ended at once
	assert.ErrorIs(t, a.Err(), context.DeadlineExceeded, "a later cancel does not change the error")
	a.cancel(context.Canceled)
	assert.ErrorIs(t, a.Err(), context.DeadlineExceeded)
}

func TestAttemptContextAfterFuncStop(t *testing.T) {
	a := &attemptCtx{parent: context.Background()}
	ran := make(chan struct{})
	stop := a.AfterFunc(func() { close(ran) })
	stop2 := a.AfterFunc(func() { t.Error("a stopped function ran") })
	assert.True(t, stop2(), "stopping before the cancel stops it")
	assert.False(t, stop2(), "a second stop reports it was already stopped")
	a.cancel(context.Canceled)
	<-ran
	assert.False(t, stop(), "stopping after the cancel is too late")
}

// advance lets d of the bubble's virtual time pass, then waits until every
// goroutine in the bubble is blocked again: inside synctest.Test the clock
// jumps as soon as everything is blocked, so no real time passes.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}
