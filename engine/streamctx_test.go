package engine

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/requests"
)

// watched is a future submitted with ctx whose context's end cancels its
// attempt (endAlone), and ended reports whether that ran.
func watched(ctx context.Context) (f *Future, ended func() bool) {
	f = newFuture(ctx, requests.New("GET", "/"))
	watch(onEnd{kind: endAlone, f: f})
	return f, func() bool { return f.w.own.ctx1.Err() != nil }
}

// TestStreamCtxRunsTheWatchesLeftWhenItEnds: cancel runs every watch not
// stopped, once; a stopped entry reused by a later watch is not stopped
// again by its first stop.
func TestStreamCtxRunsTheWatchesLeftWhenItEnds(t *testing.T) {
	s := newStreamCtx(context.Background())
	f0, ended0 := watched(s)
	stop0 := f0.w.stop
	require.Same(t, s, stop0.sc, "a Stream's request is watched by its table")
	require.True(t, stop0.stop(), "a watch not run yet is stopped")
	assert.False(t, stop0.stop(), "a second stop stops nothing")
	_, ended1 := watched(s) // takes the entry stop0 freed
	assert.Len(t, s.watches, 1, "the freed entry is reused")
	assert.False(t, stop0.stop(), "the first stop does not stop the entry's next watch")
	f2, ended2 := watched(s)

	s.cancel(context.Canceled)
	s.cancel(context.Canceled) // once
	assert.Equal(t, []bool{false, true, true}, []bool{ended0(), ended1(), ended2()})
	assert.False(t, f2.w.stop.stop(), "a watch that ran cannot be stopped")
	assert.ErrorIs(t, s.Err(), context.Canceled)
	select {
	case <-s.Done():
	default:
		t.Fatal("Done is not closed after cancel")
	}
}

// TestStreamCtxWatchAddedLateRunsAtOnce: as with context.AfterFunc, a watch
// added to an ended context runs at once, on a goroutine of its own.
func TestStreamCtxWatchAddedLateRunsAtOnce(t *testing.T) {
	s := newStreamCtx(context.Background())
	s.cancel(context.Canceled)
	f, ended := watched(s)
	assert.Eventually(t, ended, 5*time.Second, time.Millisecond, "a watch added after the end never ran")
	assert.False(t, f.w.stop.stop())
}

// TestStreamCtxEndsWithItsParent: the parent's end ends the stream's
// context with the parent's error, and runs the watches. As with
// context.AfterFunc, they run after Done is closed, on the goroutine that
// watched the parent: synctest.Wait waits for it.
func TestStreamCtxEndsWithItsParent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Hour)
		s := newStreamCtx(parent)
		_, ended := watched(s)
		cancel()
		<-s.Done()
		synctest.Wait()
		assert.True(t, ended(), "the parent's end did not run the watch")
		assert.ErrorIs(t, s.Err(), context.Canceled)
		d, ok := s.Deadline()
		assert.True(t, ok, "the parent's deadline shows through")
		assert.False(t, d.IsZero())
	})
}

// A request whose context is not a Stream's is watched by a
// context.AfterFunc, and stopped by it.
func TestWatchOfAnotherContextIsAnAfterFunc(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f, ended := watched(ctx)
	require.NotNil(t, f.w.stop.after)
	require.True(t, f.w.stop.stop())
	cancel()
	_, ended2 := watched(ctx)
	assert.Eventually(t, ended2, 5*time.Second, time.Millisecond)
	assert.False(t, ended(), "a stopped watch ran")
}
