package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/courier-go/courier/errors"
)

// The token actor's trips to its TokenStore and the token endpoint. Each
// trip is a job run on a goroutine of its own, one at a time, so the actor
// never waits on I/O; the job reports one jobResult and the actor decides
// what it means. Jobs never touch the actor's fields.
//
// A job has two contexts. wait ends when the job is voided (SetTokens,
// TerminateSession) or the engine stops: it bounds what may be abandoned
// at no cost, reading the store, waiting for its lock, the pause between
// refresh attempts. sendCtx ends only when the job is voided: it bounds
// the refresh call itself, so a refresh that has reached the server is
// finished and its answer stored even while the engine shuts down (each
// call is still bounded by Config.Timeout, and the write by its own).

type jobKind int

const (
	// jobRefresh adopts a newer stored generation if there is one, and
	// otherwise refreshes under the store's lock and writes the answer.
	jobRefresh jobKind = iota
	// jobSave writes tokens the actor holds and the store does not yet:
	// from SetTokens or TerminateSession (force: whatever the store
	// holds), or from a refresh whose write failed (only over base).
	jobSave
	// jobPoll adopts a newer stored generation, if any.
	jobPoll
)

// syncJob is what the actor asks of a job goroutine; a plain value.
type syncJob struct {
	kind  jobKind
	epoch uint64
	base  uint64 // the stored generation the actor's tokens are, or were read from
	save  Tokens // jobSave: what to write
	force bool   // jobSave: write over any generation
}

// jobResult is a job's one report; a plain value.
type jobResult struct {
	syncJob
	v         StoredTokens // the store's value, as the job last saw it
	newer     bool         // v is newer than base and was not written by this job: adopt it
	refreshed bool         // this job refreshed: issued holds the server's answer
	issued    Tokens       // with Expiry set and the old refresh token kept if not rotated
	saveErr   error        // refreshed, but issued could not be stored
	err       error        // the job failed: a refresh error (terminal or not) or a store error
}

// launch starts j on a goroutine the actor owns; its result comes back on
// a.results, which the actor always receives while a job runs.
func (a *tokenActor) launch(j syncJob) {
	sendCtx, void := context.WithCancel(context.Background())
	wait, cancelWait := context.WithCancel(sendCtx)
	stopWait := context.AfterFunc(a.ctx, cancelWait) // the engine stops
	a.running, a.runningKind = void, j.kind
	go func() {
		defer void()
		defer stopWait()
		defer cancelWait()
		var r jobResult
		switch j.kind {
		case jobRefresh:
			r = a.refreshJob(j, sendCtx, wait)
		case jobSave:
			r = a.saveJob(j, sendCtx)
		case jobPoll:
			r = a.pollJob(j, wait)
		}
		a.results <- r
	}()
}

// storeError says which step of the store failed.
func storeError(step string, err error) error {
	return fmt.Errorf("token store: %s: %w", step, err)
}

func (a *tokenActor) pollJob(j syncJob, wait context.Context) jobResult {
	r := jobResult{syncJob: j}
	v, err := a.store.Load(wait)
	if err != nil {
		r.err = storeError("reading", err)
		return r
	}
	r.v, r.newer = v, v.Generation > j.base
	return r
}

func (a *tokenActor) saveJob(j syncJob, sendCtx context.Context) jobResult {
	r := jobResult{syncJob: j}
	ctx, cancel := context.WithTimeout(sendCtx, a.e.s.Timeout)
	defer cancel()
	base := j.base
	for range 10 {
		if j.force {
			v, err := a.store.Load(ctx)
			if err != nil {
				r.err = storeError("reading", err)
				return r
			}
			base = v.Generation
		}
		cur, ok, err := a.store.CompareAndSwap(ctx, base, j.save)
		switch {
		case err != nil:
			r.err = storeError("writing", err)
			return r
		case ok:
			r.v = cur
			return r
		case !j.force:
			r.v, r.newer = cur, true
			return r
		}
		// Another writer came between the read and the write: again.
	}
	r.err = storeError("writing", fmt.Errorf("other writers kept changing it"))
	return r
}

// refreshJob is the heart of a shared session: read the store, adopt what
// is newer, or take the lock, read again, refresh, and write the answer
// with the compare-and-swap that releases the lock.
func (a *tokenActor) refreshJob(j syncJob, sendCtx, wait context.Context) jobResult {
	r := jobResult{syncJob: j}
	st := a.store
	v, err := st.Load(wait)
	if err != nil {
		r.err = storeError("reading", err)
		return r
	}
	if v.Generation > j.base {
		r.v, r.newer = v, true // someone else refreshed: no refresh of ours
		return r
	}
	// Another holder keeps the lock at most for its lease, renewed while
	// its refresh runs, each attempt bounded by a request timeout: a wait
	// longer than that means a holder that is stuck (a process stopped
	// mid-refresh), and the requests that wait are better told.
	bound := a.lockLease() + a.e.s.Timeout
	lctx, cancel := context.WithTimeout(wait, bound)
	lock, err := st.Lock(lctx, a.lockLease())
	cancel()
	if err != nil {
		if wait.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (waited %s, the lock lease plus the request timeout)", err, bound)
		}
		r.err = storeError("locking", err)
		return r
	}
	unlock := func() {
		ctx, cancel := context.WithTimeout(context.Background(), a.e.s.Timeout)
		defer cancel()
		if err := lock.Unlock(ctx); err != nil {
			a.e.log.Warn().Err(err).Msg("token store: unlocking")
		}
	}
	// Someone may have refreshed while this job waited for the lock.
	v, err = st.Load(wait)
	if err != nil {
		unlock()
		r.err = storeError("reading", err)
		return r
	}
	if v.Generation > j.base {
		unlock()
		r.v, r.newer = v, true
		return r
	}
	// The refresh rotates the token on the server: send it only if its
	// answer can be stored.
	if wc, ok := lock.(WriteChecker); ok {
		if err := wc.CheckWrite(wait); err != nil {
			unlock()
			r.err = storeError("checking it can be written", err)
			return r
		}
	}

	stopRenew := a.renew(lock)
	t, err := a.refreshWithRetries(sendCtx, wait, v.Tokens)
	stopRenew()
	if err != nil {
		unlock()
		r.err = err
		return r
	}
	if t.RefreshToken == "" {
		t.RefreshToken = v.RefreshToken // not rotated
	}
	if t.Expiry.IsZero() && t.ExpiresIn > 0 && t.ExpiresIn <= maxExpiresIn {
		t.Expiry = a.e.s.Clock.Now().Add(t.ExpiresIn)
	}
	t.ExpiresIn = 0
	r.refreshed, r.issued = true, t

	// The server has rotated the refresh token: store the answer whatever
	// happens to the callers. A new context, bounded on its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(sendCtx), a.e.s.Timeout)
	defer cancel()
	cur, ok, err := lock.Commit(ctx, v.Generation, t)
	if err != nil {
		// Once more without the lock, which Commit has released: the
		// generation check alone keeps a newer value safe.
		cur, ok, err = st.CompareAndSwap(ctx, v.Generation, t)
	}
	switch {
	case err != nil:
		r.saveErr = storeError("writing refreshed tokens", err)
	case !ok:
		// Our lease lapsed and another holder refreshed too: the store's
		// value wins, as every other engine already uses it.
		a.e.log.Error().Uint64("stored_gen", cur.Generation).Msg("token store: a newer generation was stored while this refresh ran; adopting it")
		r.refreshed = false
		r.v, r.newer = cur, true
	default:
		r.v = cur
	}
	return r
}

// renew keeps lock's lease while a refresh runs, renewing it every third
// of the lease; the returned func stops and waits for the renewer, so that
// the lock has one user at a time again.
func (a *tokenActor) renew(lock TokenLock) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		lease := a.lockLease()
		tick := time.NewTicker(lease / 3)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				ctx, cancel := context.WithTimeout(context.Background(), lease/3)
				err := lock.Renew(ctx, lease)
				cancel()
				if err != nil {
					// The commit's generation check still guards the write.
					a.e.log.Warn().Err(err).Msg("token store: renewing the refresh lock")
				}
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); <-exited }
}

// lockLease is the lease of the store's refresh lock: Auth.LockLease, or
// DefaultLockLease.
func (a *tokenActor) lockLease() time.Duration {
	if l := a.e.s.Auth.LockLease; l > 0 {
		return l
	}
	return DefaultLockLease
}
