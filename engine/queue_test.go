package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newCalls(n int) []*call {
	cs := make([]*call, n)
	for i := range cs {
		cs[i] = &call{seq: uint64(i)}
	}
	return cs
}

// popAll pops every call the way the dispatcher does (peek skips resolved
// ones) and returns their seq numbers.
func popAll(q *queue) []uint64 {
	var out []uint64
	for q.peek() != nil {
		out = append(out, q.popFront().seq)
	}
	return out
}

func TestQueueIsFIFOWithReplaysAtTheFront(t *testing.T) {
	a := newAdmission(10)
	q := newQueue(a, 10)
	cs := newCalls(5)
	for _, c := range cs[:3] {
		q.pushBack(c)
	}
	q.pushFront(cs[3]) // a replay goes first
	q.pushFront(cs[4]) // and a later one before it
	assert.Equal(t, []uint64{4, 3, 0, 1, 2}, popAll(q))
	assert.Nil(t, q.peek())
	assert.Nil(t, q.popFront())
}

// TestQueueBoundCountsAdmissionsNotReentries: full() bounds admissions;
// retries and replays re-enter past the bound, growing the ring, so work
// already admitted is never dropped.
func TestQueueBoundCountsAdmissionsNotReentries(t *testing.T) {
	a := newAdmission(2)
	q := newQueue(a, 2)
	cs := newCalls(5)
	q.pushBack(cs[0])
	assert.False(t, a.full())
	q.pushBack(cs[1])
	require.True(t, a.full(), "two admitted fill a queue of two")
	q.pushFront(cs[2])
	q.pushBack(cs[3])
	q.pushFront(cs[4])
	assert.Equal(t, 5, q.live(), "re-entries grow the ring past the bound")
	assert.Equal(t, []uint64{4, 2, 0, 1, 3}, popAll(q))
	assert.False(t, a.full())
}

// TestQueueDiscardFreesRoomAtOnce: a queued call resolved while waiting
// (its waiters left) stops counting against the bound at once and is
// skipped when it reaches the front.
func TestQueueDiscardFreesRoomAtOnce(t *testing.T) {
	a := newAdmission(2)
	q := newQueue(a, 2)
	cs := newCalls(3)
	q.pushBack(cs[0])
	q.pushBack(cs[1])
	require.True(t, a.full())
	cs[0].state = stateDone
	q.discard()
	assert.False(t, a.full(), "the resolved call no longer takes room")
	q.pushBack(cs[2])
	assert.True(t, a.full())
	assert.Same(t, cs[1], q.peek(), "peek skips the resolved call at the front")
	assert.Equal(t, []uint64{1, 2}, popAll(q))
	assert.Equal(t, 0, q.live())
}

func TestQueueDrainReturnsLiveCallsFrontFirst(t *testing.T) {
	a := newAdmission(8)
	q := newQueue(a, 8)
	cs := newCalls(4)
	for _, c := range cs {
		q.pushBack(c)
	}
	cs[1].state = stateDone
	q.discard()
	got := q.drain()
	require.Len(t, got, 3)
	assert.Equal(t, []*call{cs[0], cs[2], cs[3]}, got)
	assert.Equal(t, 0, q.live())
	assert.Nil(t, q.peek())
}

// TestQueueWrapsAndGrowsInOrder pushes and pops across the ring's end many
// times, growing it while wrapped, and checks the order never changes.
func TestQueueWrapsAndGrowsInOrder(t *testing.T) {
	a := newAdmission(4)
	q := newQueue(a, 4)
	next, want := uint64(0), uint64(0)
	for round := range 50 {
		for range round%7 + 1 {
			q.pushBack(&call{seq: next})
			next++
		}
		for range round % 5 {
			if c := q.popFront(); c != nil {
				require.Equal(t, want, c.seq)
				want++
			}
		}
	}
	for q.peek() != nil {
		require.Equal(t, want, q.popFront().seq)
		want++
	}
	assert.Equal(t, next, want, "every call came out, once, in order")
}
