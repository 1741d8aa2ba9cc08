package engine

// queue is the bounded FIFO of calls waiting for a worker, with room at the
// front for replays after a token refresh. Owned by the dispatcher
// goroutine; not safe for concurrent use.
//
// The bound applies to admissions (see full): requests already admitted
// (retries, replays) always re-enter, growing the ring if they must, so
// admitted work is never dropped.
type queue struct {
	buf   []*call
	head  int
	n     int // entries in buf, dead ones included
	dead  int // entries already resolved (see discard)
	limit int
}

func newQueue(limit int) *queue {
	return &queue{buf: make([]*call, min(limit, 1024)), limit: limit}
}

func (q *queue) full() bool { return q.live() >= q.limit }

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

func (q *queue) pushBack(c *call) {
	q.grow()
	q.buf[(q.head+q.n)%len(q.buf)] = c
	q.n++
}

func (q *queue) pushFront(c *call) {
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

func (q *queue) popFront() *call {
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
// in the ring until it reaches the front, where peek drops it, but no longer
// counts against the bound.
func (q *queue) discard() { q.dead++ }

// live returns how many calls in the queue still wait for a worker.
func (q *queue) live() int { return q.n - q.dead }

// skipDead drops resolved calls from the front.
func (q *queue) skipDead() {
	for q.n > 0 && q.buf[q.head].state == stateDone {
		q.popFront()
		q.dead--
	}
}

// drain removes and returns every live call, front first.
func (q *queue) drain() []*call {
	out := make([]*call, 0, q.live())
	for q.n > 0 {
		if c := q.popFront(); c.state != stateDone {
			out = append(out, c)
		}
	}
	q.dead = 0
	return out
}
