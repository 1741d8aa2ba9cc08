package engine

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStreamCtxRunsTheWatchesLeftWhenItEnds: cancel runs every watch not
// stopped, once; a stopped entry reused by a later watch is not stopped
// again by its first stop.
func TestStreamCtxRunsTheWatchesLeftWhenItEnds(t *testing.T) {
	s := newStreamCtx(context.Background())
	var ran [3]atomic.Int32
	stop0 := s.add(func() { ran[0].Add(1) })
	require.True(t, stop0(), "a watch not run yet is stopped")
	assert.False(t, stop0(), "a second stop stops nothing")
	s.add(func() { ran[1].Add(1) }) // takes the entry stop0 freed
	assert.False(t, stop0(), "the first stop does not stop the entry's next watch")
	stop2 := s.add(func() { ran[2].Add(1) })

	s.cancel(context.Canceled)
	s.cancel(context.Canceled) // once
	assert.Equal(t, [3]int32{0, 1, 1}, [3]int32{ran[0].Load(), ran[1].Load(), ran[2].Load()})
	assert.False(t, stop2(), "a watch that ran cannot be stopped")
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
	ran := make(chan struct{})
	stop := s.add(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a watch added after the end never ran")
	}
	assert.False(t, stop())
}

// TestStreamCtxEndsWithItsParent: the parent's end ends the stream's
// context with the parent's error, and runs the watches.
func TestStreamCtxEndsWithItsParent(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Hour)
	s := newStreamCtx(parent)
	ran := make(chan struct{})
	s.add(func() { close(ran) })
	cancel()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the parent's end did not run the watch")
	}
	<-s.Done()
	assert.ErrorIs(t, s.Err(), context.Canceled)
	d, ok := s.Deadline()
	assert.True(t, ok, "the parent's deadline shows through")
	assert.False(t, d.IsZero())
}
