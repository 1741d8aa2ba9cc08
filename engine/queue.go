package engine

import "sync/atomic"

// queue is the bounded FIFO of calls waiting for a worker, with room at the
// front for replays after a token refresh. The ring is owned by the
// dispatcher goroutine; room is shared (see reserve).
//
// The bound applies to admissions (see full): requests already admitted
// (retries, replays) always re-enter, growing the ring if they must, so
// admitted work is never dropped.
type queue struct {
	// room is the bound less the live calls in the ring and the places
	// reserved for admissions on their way (see reserve). Submit reserves
	// and releases from any goroutine; every other change is the
	// dispatcher's. Re-entries may take it below zero.
	room atomic.Int64

	// Owned by the dispatcher goroutine.
	buf  []*call
	head int
	n    int // entries in buf, dead ones included
	dead int // entries already resolved (see discard)
}

func newQueue(limit int) *queue {
	q := &queue{buf: make([]*call, min(limit, 1024))}
	q.room.Store(int64(limit))
	return q
}

// reserve takes a place for an admission, if there is one: the caller then
// admits with pushReserved or gives the place back with release. Safe from
// any goroutine.
func (q *queue) reserve() bool {
	if q.room.Add(-1) >= 0 {
		return true
	}
	q.room.Add(1)
	return false
}

// release gives back a place that reserve took. Safe from any goroutine.
func (q *queue) release() { q.room.Add(1) }

// full reports whether an admission would have to wait.
func (q *queue) full() bool { return q.room.Load() <= 0 }

func (q *queue) grow() {
	if q.n < len(q.buf) {
		return
	}
	nb := make([]*call, max(2*len(q.buf), 16))
	for i := 0; i < q.n; i++ {
		nb[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = nb, 0
}

// pushBack adds c at the back, taking a place.
func (q *queue) pushBack(c *call) {
	q.room.Add(-1)
	q.pushReserved(c)
}

// pushReserved adds c at the back in a place reserve took for it.
func (q *queue) pushReserved(c *call) {
	q.grow()
	q.buf[(q.head+q.n)%len(q.buf)] = c
	q.n++
}

// pushFront adds c at the front, taking a place.
func (q *queue) pushFront(c *call) {
	q.room.Add(-1)
	q.grow()
	q.head = (q.head - 1 + len(q.buf)) % len(q.buf)
	q.buf[q.head] = c
	q.n++
}

func (q *queue) peek() *call {
	q.skipDead()
	if q.n == 0 {
		return nil
	}
	return q.buf[q.head]
}

// popFront removes the call at the front, live (call peek first), and
// gives its place back.
func (q *queue) popFront() *call {
	c := q.pop()
	if c != nil {
		q.room.Add(1)
	}
	return c
}

func (q *queue) pop() *call {
	if q.n == 0 {
		return nil
	}
	c := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return c
}

// discard records that a queued call was resolved while waiting; it stays
// in the ring until it reaches the front, where peek drops it, but its
// place is given back at once.
func (q *queue) discard() {
	q.dead++
	q.room.Add(1)
}

// live returns how many calls in the queue still wait for a worker.
func (q *queue) live() int { return q.n - q.dead }

// skipDead drops resolved calls from the front.
func (q *queue) skipDead() {
	for q.n > 0 && q.buf[q.head].state == stateDone {
		q.pop()
		q.dead--
	}
}

// drain removes and returns every live call, front first, giving their
// places back.
func (q *queue) drain() []*call {
	out := make([]*call, 0, q.live())
	for q.n > 0 {
		if c := q.pop(); c.state != stateDone {
			out = append(out, c)
			q.room.Add(1)
		}
	}
	q.dead = 0
	return out
}
