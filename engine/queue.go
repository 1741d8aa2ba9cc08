package engine

// queue is the bounded FIFO of calls waiting for a worker, with room at the
// front for replays after a token refresh. The ring is owned by the
// dispatcher goroutine; its bound is the admission's (admission.go), told
// of every call that enters or leaves.
//
// The bound applies to admissions: requests already admitted (retries,
// replays) always re-enter, growing the ring if they must, so admitted work
// is never dropped.
type queue struct {
	a *admission

	// Owned by the dispatcher goroutine.
	buf  []*call
	head int
	n    int // entries in buf, dead ones included
	dead int // entries already resolved (see discard)
}

func newQueue(a *admission, limit int) *queue {
	return &queue{a: a, buf: make([]*call, min(limit, 1024))}
}

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
	q.a.take()
	q.pushReserved(c)
}

// pushReserved adds c at the back in a place admission.reserve took for it.
func (q *queue) pushReserved(c *call) {
	q.grow()
	q.buf[(q.head+q.n)%len(q.buf)] = c
	q.n++
}

// pushFront adds c at the front, taking a place.
func (q *queue) pushFront(c *call) {
	q.a.take()
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
		q.a.give()
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
	q.a.give()
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
			q.a.give()
		}
	}
	q.dead = 0
	return out
}
