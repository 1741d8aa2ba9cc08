package engine

import (
	"context"
	"net/url"
	"sync"
	"time"

	"github.com/courier-go/courier/requests"
)

type callState uint8

const (
	stateQueued  callState = iota // in the queue
	stateRunning                  // handed to a worker
	stateBackoff                  // waiting on a retry timer
	stateParked                   // waiting on a token refresh
	stateDone                     // resolved; late news about it is ignored
)

// call is one upstream request and every future waiting on it (the first
// submitter and its dedup followers). Apart from the fields marked
// immutable, a call is owned by the dispatcher goroutine; a worker reads
// only the immutable fields and the job it was handed.
type call struct {
	req        *requests.Request // immutable
	url        *url.URL          // immutable; absolute
	urlStr     string            // immutable; url as a string
	sameOrigin bool              // immutable; url has the base URL's origin
	key        string            // immutable; dedup key, "" when not shared
	base       context.Context   // immutable; the first waiter's values, never cancelled

	mu        sync.Mutex         // protects abandoned and stop
	abandoned bool               // nobody waits any more; attempts must stop
	stop      context.CancelFunc // cancels the running attempt

	waiters  []*Future
	w1       [1]*Future // backing for the first waiter, saving an allocation
	state    callState
	attempts int // attempts sent so far
	retries  int // attempts that were retries
	// retryCost is what the call's retries took from the retry budget,
	// refunded when it succeeds.
	retryCost int
	// replays counts the times the call was replayed after its token was
	// replaced; replayAttempt is the number of the latest replay attempt.
	// A 401 on a replay attempt once maxReplays is reached is final, so a
	// server that rejects every token never loops through refreshes.
	replays       int
	replayAttempt int
	gen           uint64 // token generation of the latest attempt
	timer         Timer  // backoff timer while in stateBackoff
	admitted      time.Time
	seq           uint64 // order of admission

	prev, next *call // links in the dispatcher's live list
	slot       *slot // the worker running the call's attempt, if any

	// out is the running attempt's report, written by the worker that
	// runs it and read by the dispatcher once the worker has sent c back.
	// One attempt of a call runs at a time.
	out outcome
}

// maxReplays bounds how many times one request is replayed after a token
// refresh. The usual case needs one; a second covers a fresh token that
// expired again before the replay reached the server (tokens limited by
// use count, or a refresh racing a revocation).
const maxReplays = 2

// abandon stops the running attempt, if any, and any attempt that would
// start after. Safe from any goroutine.
func (c *call) abandon() {
	c.mu.Lock()
	c.abandoned = true
	stop := c.stop
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// attemptContext returns a context for the next step of an attempt, derived
// from parent (c.base or a context derived from it), that abandon cancels.
// ok is false when c is already abandoned.
func (c *call) attemptContext(parent context.Context, timeout time.Duration) (ctx context.Context, cancel context.CancelFunc, ok bool) {
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(parent, timeout)
	} else {
		ctx, cancel = context.WithCancel(parent)
	}
	c.mu.Lock()
	ok = !c.abandoned
	if ok {
		c.stop = cancel
	}
	c.mu.Unlock()
	if !ok {
		cancel()
	}
	return ctx, cancel, ok
}

// job is what a worker gets: a call and the attempt number to run.
type job struct {
	c       *call
	attempt int
}

// outcome is a worker's report of one attempt.
type outcome struct {
	c    *call
	resp *requests.Response // the answer, when one came
	err  error              // final error for this attempt, if any
	gen  uint64             // token generation the attempt carried

	retry      bool          // the retry policy asked for another try
	authFailed bool          // the answer rejected the token
	retryAfter time.Duration // what Retry-After asked for, capped
	hasAfter   bool
}
