package engine

import (
	"context"
	"net/url"
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
// submitter and its dedup followers).
//
// Each field has one regime. The first group is written before any worker
// sees the call (by Submit in prepare, then by the dispatcher when it
// admits it) and is read-only from then on: workers read it freely.
// Everything else is owned by the dispatcher goroutine and never touched
// by another. A worker learns what to do from its [job] and tells what
// happened with an [outcome]; it never writes into a call.
type call struct {
	// Read-only once admitted.
	req        *requests.Request
	url        url.URL         // absolute
	key        string          // dedup key, "" when not shared
	base       context.Context // the first waiter's values, never cancelled
	detached   detachedCtx     // base when that waiter's context can end (detach)
	stream     *streamed       // set when the answer is handed over alive
	cached     *cacheLookup    // the cache's part in it (cache.go); nil: none
	admitted   time.Time
	seq        uint64 // order of admission
	sameOrigin bool   // url has the base URL's origin: the token may go

	// Owned by the dispatcher goroutine. The small fields come first,
	// next to sameOrigin, so that they share its word: a queued call's
	// size counts (memory per queued request, bench/).
	state callState
	// replays counts the times the call was replayed after its token was
	// replaced; replayAttempt is the number of the latest replay attempt.
	// A 401 on a replay attempt once maxReplays is reached is final, so a
	// server that rejects every token never loops through refreshes.
	replays int8
	// fastShared is under the lock of the call's dedup shard (see fwait).
	fastShared    bool
	attempts      int32 // attempts sent so far
	replayAttempt int32
	waiters       []*Future
	w1            [1]*Future // backing for the first waiter, saving an allocation
	retries       int        // attempts that were retries
	// retryCost is what the call's retries took from the retry budget,
	// refunded when it succeeds.
	retryCost  int
	gen        uint64 // token generation of the latest attempt
	timer      Timer  // backoff timer while in stateBackoff
	prev, next *call  // links in the dispatcher's live list
	// slot is the worker running the call's attempt and ctx that attempt's
	// context. Both are set when the dispatcher hands out the job and
	// cleared when it reads the worker's report. The dispatcher cancels
	// ctx when every waiter has left or the session ends.
	slot *slot
	ctx  *attemptCtx
	// first is the running job's first waiter, which its worker resolves
	// itself on a 2xx answer (see job.first): until the report comes, the
	// dispatcher may find it resolved already.
	first *Future
	// ctx1 is the first attempt's context, in the call to save an
	// allocation; later attempts get a new one (see attemptCtx).
	ctx1 attemptCtx
	// live is a streamed call's answer, from the worker's report until
	// finish hands it to the future or the report's handling releases it.
	live *liveResponse

	// Under the lock of the call's dedup shard (dedup.go): fastShared
	// (above) is set while the call is in the table and on the fast path,
	// and fwait then holds its waiters, its leader first.
	fwait []*Future
}

// maxReplays bounds how many times one request is replayed after a token
// refresh. The usual case needs one; a second covers a fresh token that
// expired again before the replay reached the server (tokens limited by
// use count, or a refresh racing a revocation).
const maxReplays = 2

// job is what the dispatcher hands a worker: a call, the number of the
// attempt to run, and the attempt's context, which the dispatcher may
// cancel (see call.ctx). The worker arms the context's deadline when the
// attempt starts, after any wait for the rate limiter.
type job struct {
	c       *call
	attempt int
	ctx     *attemptCtx
	// first is the call's first waiter when the job was handed out. On a
	// 2xx answer the worker resolves it itself, sparing its caller the
	// wait for the dispatcher; the dispatcher resolves the others.
	first *Future
	// fast marks a first attempt on the fast path (gate.go): the dispatcher
	// has not seen the call, and the worker ends it with endFast.
	fast bool
	// at, when set, is the time the attempt starts, read just before by
	// whoever runs it (a caller running its own attempt).
	at time.Time
}

// outcome is a worker's report of one attempt, sent by value to the
// dispatcher. The worker is idle again once the dispatcher has read it.
type outcome struct {
	c    *call
	resp *requests.Response // the answer, when one came
	live *liveResponse      // a streamed call's answer, body unread
	err  error              // final error for this attempt, if any
	gen  uint64             // token generation the attempt carried
	// settled is the job's first waiter when the worker resolved it with
	// resp; the dispatcher resolves the call's other waiters.
	settled *Future
	// pristine is resp as it came, kept by value when the worker handed
	// resp itself to the settled waiter of a call others may have joined
	// (one with a dedup key): the dispatcher copies it for them, never
	// resp, which is the settled waiter's own from then on.
	pristine requests.Response

	retry      bool          // the retry policy asked for another try
	authFailed bool          // the answer rejected the token
	retryAfter time.Duration // what Retry-After asked for, capped
	hasAfter   bool
	// held is set, and nothing else, when the attempt did not start: its
	// host or route is held this long (pacing.go).
	held time.Duration
}
