package engine

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/courier-go/courier/errors"
)

// The token actor's protocol.
//
// The actor is one goroutine (run) that owns the refresh token, the known
// expiry and the refresh in flight, and publishes the access token as an
// immutable snapshot (Engine.tokens) under a generation number that every
// change bumps. Workers read the snapshot; nobody else writes it.
//
// Who sends what:
//
//   - The dispatcher sends a demand g on demands: "a request carrying
//     generation g was rejected, or g is past its expiry; get me a generation
//     after g". Every demand is answered by one of these events told to
//     the dispatcher, now or later (one event may answer many demands):
//     refreshedEvent{gen} with gen > g (a refresh or SetTokens published gen),
//     refreshFailedEvent{gen} with gen >= g (the refresh kept failing for
//     transient reasons; the session goes on), or expiredEvent (the session
//     has ended). Demands for the same generation merge: one refresh call
//     answers all of them. A demand is "outstanding" while want >= the
//     current generation; whenever one is outstanding and the session has not
//     ended, a refresh of the current epoch is running or is started at once.
//   - Engine.SetTokens sends setTokensMsg and Engine.TerminateSession sends
//     clearTokensMsg, each waiting until the actor has handled it. Both bump
//     the epoch, which voids (and cancels) a refresh in flight: its result,
//     whatever it is, is never published, because the caller's tokens are
//     newer. SetTokens then tells refreshedEvent with the new generation
//     and started set, which answers every demand made so far and ends a
//     pause; Engine.SetTokens returns once the dispatcher has handled it
//     (the event carries a channel it closes). TerminateSession tells expiredEvent (the dispatcher fails what
//     waits and pauses), waits until the dispatcher has done so, then
//     clears the tokens and marks the session ended; later demands are
//     answered with expiredEvent until SetTokens.
//     The dispatcher learns the session's state from these events alone.
//   - The actor's TokenStore (Auth.Store, or a MemoryStore of its own) is
//     the source of truth; the actor's copy is the store's value at
//     generation stored, plus, at times, tokens the store does not hold yet
//     (unsaved: from SetTokens, TerminateSession, or a refresh whose write
//     failed). Every trip to the store or the token endpoint is a job
//     (tokensync.go) on a goroutine of its own, one at a time: a save of
//     unsaved tokens first, then a refresh while a demand is outstanding
//     (or the proactive timer asked, or Engine.TokenSource waits), then a
//     poll when the store announced (Watch) or may have (the poll timer) a
//     newer generation. A refresh job first reads the store: a newer
//     generation is adopted, published and told as refreshedEvent, without
//     a refresh. Otherwise it refreshes under the store's lock and writes
//     the answer before the actor publishes it and tells refreshedEvent, so
//     parked requests are replayed only once the new tokens are stored. A
//     refresh whose answer could not be stored is published all the same
//     (the server has spent the old refresh token), kept unsaved (saved
//     again every storePoll, before the next refresh and on stop), and its
//     demands are answered with refreshedEvent, as the refresh worked;
//     OnTokenRefreshed still runs.
//   - The job goroutine (launch) sends exactly one jobResult, tagged with
//     the epoch it started in, and the actor waits for it before it exits.
//     A result of a voided epoch is dropped, but if a demand for the
//     current generation came meanwhile, a new refresh starts at once, so
//     that demand is answered by it.
//   - Engine.TokenSource sends wantMsg{gen}, a demand whose answer goes back
//     to it (nil once a generation past gen is published) instead of to
//     the dispatcher.
//   - The proactive timer fires once per generation, at the later of
//     "RefreshBefore ahead of the known expiry" and "refreshFloor after the
//     previous refresh". If the token is still valid then, the actor refreshes
//     early, and arms the stale timer for the expiry itself. If the expiry
//     has passed (a late timer, or a token whose lifetime is shorter than the
//     floor), nothing is refreshed now: the actor tells staleEvent. So a token
//     issued with a lifetime under the floor is sent until the floor has
//     passed (the server may well accept it; a 401 is handled as always),
//     and then refreshed before the next request: one refresh per floor at
//     most, never a loop.
//   - staleEvent{gen} (told when the proactive or the stale timer finds the
//     expiry of the current generation passed, and, ahead of any event that
//     lets requests carry gen, when the tokens the actor starts with, gets
//     from SetTokens or adopts from the store have no access token or one
//     past its known expiry, while a refresh can replace it) means "do not send gen: before
//     the next request that would carry it, demand a refresh past gen and
//     keep the requests that would carry it waiting until the demand is answered". An
//     idle engine thus never refreshes a dead token, and a busy one refreshes
//     it once, before the request.
//
// On stop the actor ends the jobs' waiting (for the store, its lock, a
// pause between refresh attempts) but not a refresh call in flight: that
// one is finished and stored before the actor returns, so Shutdown
// returns with the session's newest tokens in the store. Close bounds
// that wait by Auth.CloseGrace, measured from the call to Close, then
// cancels the call and warns (awaitJob).
//
// Every event goes to the dispatcher's mailbox, where a delivery never
// blocks, so the actor never waits on the dispatcher, except once per
// TerminateSession, for the expiredEvent to be handled (the dispatcher
// handles it without waiting on anyone); and the dispatcher, which only
// offers a demand as one case of its select, never blocks on the actor.

// refreshFloor is the least time between the end of one refresh and a
// proactive refresh of the token it produced, so that a server answering
// with tiny lifetimes cannot make the engine refresh in a loop.
const refreshFloor = time.Second

// Messages to the token actor.
type (
	setTokensMsg struct {
		t       Tokens
		done    chan struct{}
		resumed chan struct{} // closed by the dispatcher once it has resumed
	}
	clearTokensMsg struct {
		done   chan struct{}
		failed chan struct{} // closed by the dispatcher once it has paused
	}
	wantMsg struct {
		gen   uint64
		reply chan error // size 1
	}
)

// storePoll is how often the actor reads a store that cannot notify.
const storePoll = time.Second

// tokenActor is the goroutine that owns the tokens and serializes refresh:
// one refresh at a time, and none for a generation already replaced.
type tokenActor struct {
	e       *Engine
	store   TokenStore  // the source of truth; never nil
	demands chan uint64 // from the dispatcher: refresh past this generation
	inbox   chan any    // setTokensMsg, clearTokensMsg and wantMsg
	results chan jobResult
	stop    chan struct{}   // closed by the engine after the dispatcher has returned
	ctx     context.Context // cancelled on stop; ends the jobs' waiting
	cancel  context.CancelFunc

	client *http.Client // for refresh calls: redirects stay on the endpoint's origin

	// Owned by the actor goroutine.
	refreshToken string // current refresh token
	expiry       time.Time
	expired      bool               // the session has ended: no refresh until SetTokens
	running      context.CancelFunc // voids the job in flight; nil when none runs
	runningKind  jobKind            // the job in flight, when running is set; Close's grace warns of a refresh
	epoch        uint64             // bumped when tokens are replaced, voiding a running job
	want         uint64             // highest generation demanded; outstanding while >= the current one
	early        bool               // the proactive timer asks for a refresh
	lastRefresh  time.Time          // when the latest refresh was published
	proactive    Timer              // refresh ahead of the expiry; nil when not armed
	stale        Timer              // the expiry itself, while an early refresh runs
	staleGen     uint64             // the generation stale was armed for
	stored       uint64             // the store's generation of the current tokens
	unsaved      *Tokens            // tokens the store does not hold yet; nil when none
	saveFailed   bool               // the last save failed: retry on the next need or saveRetry, not at once
	saveRetry    Timer              // retries a failed save; nil when not armed
	saveWaiters  []chan struct{}    // SetTokens and TerminateSession calls waiting for their save
	wanters      []chan error       // Engine.TokenSource calls waiting for a refresh
	watch        <-chan uint64      // the store's notices; nil when it cannot notify or is private
	poll         Timer              // reads a store that cannot notify; nil otherwise
	pollDue      bool               // the store may hold a newer generation
}

// newTokenActor reads the store (seeding it from Auth when it is empty)
// and publishes its tokens as generation 1. A store that cannot be read
// is an error: starting with tokens that may have been rotated away would
// risk the session.
func newTokenActor(e *Engine) (*tokenActor, error) {
	ctx, cancel := context.WithCancel(context.Background())
	a := &tokenActor{
		e:       e,
		store:   e.s.Auth.Store,
		demands: make(chan uint64),
		inbox:   make(chan any),
		results: make(chan jobResult),
		stop:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		client:  refreshClient(e.client),
	}
	if a.store == nil {
		a.store = NewMemoryStore()
	}
	lctx, lcancel := context.WithTimeout(ctx, e.s.Timeout)
	defer lcancel()
	v, err := a.store.Load(lctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("courier: Auth.Store: %w", err)
	}
	seed := Tokens{AccessToken: e.s.Auth.AccessToken, RefreshToken: e.s.Auth.RefreshToken, Expiry: e.s.Auth.Expiry}
	if v.Generation == 0 && seed != (Tokens{}) {
		cur, _, err := a.store.CompareAndSwap(lctx, 0, seed)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("courier: Auth.Store: %w", err)
		}
		v = cur // ours, or the value someone else seeded first
	}
	a.refreshToken, a.expiry, a.stored = v.RefreshToken, v.Expiry, v.Generation
	e.tokens.Store(e.s.snapshot(v.AccessToken, firstGen, v.Expiry))
	if a.unusable() {
		// Told before New returns, so it is in the dispatcher's mailbox
		// ahead of the first Submit: no request goes out with no token, or
		// with one known to have expired, while a refresh can get one.
		a.tell(staleEvent{gen: firstGen})
	}
	return a, nil
}

// unusable reports whether the current access token must not be sent
// while a refresh can replace it: there is none, or its known expiry has
// passed. The first request that would carry it then waits for a refresh,
// as after a 401.
func (a *tokenActor) unusable() bool {
	s := a.e.s
	if a.expired || !s.canRefresh() || (a.refreshToken == "" && s.needsRefreshToken()) {
		return false
	}
	if a.e.tokens.Load().access == "" {
		return true
	}
	return !a.expiry.IsZero() && !s.Clock.Now().Before(a.expiry)
}

// ask delivers m to the actor and waits until it has been handled.
func (a *tokenActor) ask(m any, done chan struct{}) {
	select {
	case a.inbox <- m:
		<-done
	case <-a.stop:
	}
}

// wait asks for a generation past gen and waits until one is published
// (nil), the refresh fails, the session ends, the engine stops or ctx
// ends.
func (a *tokenActor) wait(ctx context.Context, gen uint64) error {
	reply := make(chan error, 1)
	select {
	case a.inbox <- wantMsg{gen: gen, reply: reply}:
	case <-a.stop:
		return errors.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *tokenActor) gen() uint64 { return a.e.tokens.Load().gen }

func (a *tokenActor) run() {
	defer a.cancel()
	if a.e.s.Auth.Store != nil {
		if a.watch = a.store.Watch(a.ctx); a.watch == nil {
			a.poll = a.e.s.Clock.NewTimer(storePoll)
		}
	}
	a.schedule()
	for {
		var proactive, stale, poll, saveRetry <-chan time.Time
		if a.saveRetry != nil {
			saveRetry = a.saveRetry.C()
		}
		if a.proactive != nil {
			proactive = a.proactive.C()
		}
		if a.stale != nil {
			stale = a.stale.C()
		}
		if a.poll != nil {
			poll = a.poll.C()
		}
		select {
		case g := <-a.demands:
			a.onDemand(g)
		case <-proactive:
			a.proactive = nil
			a.onProactive()
		case <-stale:
			a.stale = nil
			if a.staleGen == a.gen() && !a.expired {
				a.tell(staleEvent{gen: a.staleGen})
			}
		case g, ok := <-a.watch:
			if !ok {
				a.watch = nil // the store stopped watching: we are stopping
			} else if g > a.stored {
				a.pollDue = true
			}
		case <-saveRetry:
			a.saveRetry = nil
			a.saveFailed = false
		case <-poll:
			a.pollDue = true
			a.poll = a.e.s.Clock.NewTimer(storePoll)
		case r := <-a.results:
			a.running = nil
			if r.epoch == a.epoch {
				a.onResult(r)
			}
			// A voided result is dropped; an outstanding demand gets a
			// refresh of its own below.
		case m := <-a.inbox:
			switch m := m.(type) {
			case setTokensMsg:
				a.void()
				a.expired = false
				a.refreshToken = m.t.RefreshToken
				a.publish(m.t)
				a.keep(m.t, m.done)
				if a.unusable() {
					// Before the event that resumes the dispatcher, so
					// that no request carries a token known to be dead.
					a.tell(staleEvent{gen: a.gen()})
				}
				ev := refreshedEvent{gen: a.gen(), started: true, done: m.resumed}
				if !a.tell(ev) {
					close(m.resumed)
				}
				a.answerWanters(nil)
			case clearTokensMsg:
				a.void()
				// The dispatcher first fails and cancels what is pending
				// and pauses, so nothing goes out with the cleared token:
				// the token stays until it has. It closes failed without
				// waiting on anyone (before it exits, at the latest), so
				// this wait is short and cannot deadlock.
				if a.tell(expiredEvent{done: m.failed}) {
					<-m.failed
				} else {
					close(m.failed)
				}
				a.expired = true
				a.want = 0
				a.refreshToken = ""
				a.publish(Tokens{})
				a.keep(Tokens{}, m.done)
				a.answerWanters(errors.ErrSessionExpired)
			case wantMsg:
				switch {
				case a.gen() > m.gen:
					m.reply <- nil
				case a.expired:
					m.reply <- errors.ErrSessionExpired
				default:
					a.want = max(a.want, m.gen)
					a.wanters = append(a.wanters, m.reply)
					a.saveFailed = false
				}
			}
		case <-a.stop:
			a.stopTimers()
			if a.poll != nil {
				a.poll.Stop()
			}
			if a.saveRetry != nil {
				a.saveRetry.Stop()
			}
			a.cancel() // a refresh call in flight is finished and stored
			if a.running != nil {
				r := a.awaitJob()
				if r.epoch == a.epoch && r.refreshed {
					a.e.log.Info().Msg("token refreshed while stopping")
					a.onResult(r) // its hook runs; the dispatcher is gone
				}
			}
			if a.unsaved != nil {
				// The last chance to store tokens the store lacks: the
				// server may have spent the refresh token it holds.
				a.onSaved(a.saveJob(syncJob{kind: jobSave, epoch: a.epoch, base: a.stored, save: *a.unsaved, force: len(a.saveWaiters) > 0}, context.Background()))
			}
			if a.saveRetry != nil {
				a.saveRetry.Stop()
			}
			for _, done := range a.saveWaiters {
				close(done)
			}
			a.answerWanters(errors.ErrClosed)
			a.endWatch()
			return
		}
		a.next()
	}
}

// awaitJob waits for the job in flight as the actor stops. A refresh
// that has reached the server may have rotated the refresh token, so its
// answer is waited for and stored; but once Close is called, only for
// Auth.CloseGrace: then the job is voided (its call cancelled, which ends
// it promptly) and a warning says the rotated token may be lost.
func (a *tokenActor) awaitJob() jobResult {
	killed := a.e.killed
	var grace <-chan time.Time
	for {
		select {
		case r := <-a.results:
			a.running = nil
			return r
		case <-killed:
			killed = nil
			d := a.e.s.Auth.CloseGrace
			if d == 0 {
				d = DefaultCloseGrace
			}
			t := a.e.s.Clock.NewTimer(max(d, 0))
			defer t.Stop()
			grace = t.C()
		case <-grace:
			grace = nil
			if a.runningKind == jobRefresh {
				a.e.log.Warn().Msg("Close: abandoning the token refresh in flight; the token it rotated, if any, may be lost")
			}
			a.running() // cancels the call; the job reports at once
		}
	}
}

// watchCloseWait bounds how long stopping waits for the store to close its
// Watch channel, as the TokenStore contract says it does once the context
// has ended: a store that never does must not hang Close.
const watchCloseWait = 5 * time.Second

// endWatch waits for the store's Watch channel to close (its watcher has
// returned), at most watchCloseWait, in real time.
func (a *tokenActor) endWatch() {
	if a.watch == nil {
		return
	}
	t := time.NewTimer(watchCloseWait)
	defer t.Stop()
	for {
		select {
		case _, ok := <-a.watch:
			if !ok {
				return
			}
		case <-t.C:
			a.e.log.Error().Dur("waited", watchCloseWait).
				Msg("token store: Watch channel still open after its context ended; stopping without it")
			return
		}
	}
}

// keep records t as tokens the store must get, forcing them over whatever
// it holds (SetTokens and TerminateSession win), and makes done wait for
// the write.
func (a *tokenActor) keep(t Tokens, done chan struct{}) {
	t.ExpiresIn = 0
	t.Expiry = a.expiry
	a.unsaved = &t
	a.saveFailed = false
	a.saveWaiters = append(a.saveWaiters, done)
}

// next starts the job the actor needs, if none runs: a save of unsaved
// tokens first, then a refresh for an outstanding demand, then a poll.
func (a *tokenActor) next() {
	if a.running != nil {
		return
	}
	outstanding := !a.expired && (a.want >= a.gen() || a.early)
	switch {
	case a.unsaved != nil && !a.saveFailed:
		a.launch(syncJob{kind: jobSave, epoch: a.epoch, base: a.stored, save: *a.unsaved, force: len(a.saveWaiters) > 0})
	case a.unsaved != nil && outstanding:
		// The last save failed and a refresh is wanted: the store would
		// hand out a spent refresh token, so save again first.
		a.saveFailed = false
		a.launch(syncJob{kind: jobSave, epoch: a.epoch, base: a.stored, save: *a.unsaved})
	case outstanding:
		a.early = false
		a.launch(syncJob{kind: jobRefresh, epoch: a.epoch, base: a.stored})
	case a.pollDue && a.unsaved == nil:
		a.pollDue = false
		a.launch(syncJob{kind: jobPoll, epoch: a.epoch, base: a.stored})
	}
}

// onDemand handles the dispatcher's demand for a generation past g.
func (a *tokenActor) onDemand(g uint64) {
	switch cur := a.gen(); {
	case cur > g:
		a.tell(refreshedEvent{gen: cur})
	case a.expired:
		a.tell(expiredEvent{})
	default:
		a.want = max(a.want, g)
		a.saveFailed = false
		// next starts a refresh, or the job in flight answers: its result
		// if it is a refresh of this epoch, a new refresh after it if not.
	}
}

// onProactive refreshes ahead of the expiry, or, when the expiry has
// already passed, tells the dispatcher to demand a refresh before sending
// the token again.
func (a *tokenActor) onProactive() {
	if a.expired || (a.refreshToken == "" && a.e.s.needsRefreshToken()) {
		return
	}
	gen, now := a.gen(), a.e.s.Clock.Now()
	if !now.Before(a.expiry) {
		a.tell(staleEvent{gen: gen})
		return
	}
	a.e.log.Debug().Uint64("token_gen", gen).Msg("refreshing token before expiry")
	a.early = true
	a.staleGen = gen
	a.stale = a.e.s.Clock.NewTimer(a.expiry.Sub(now))
}

// void cancels the job in flight, if any, whose result will be dropped.
func (a *tokenActor) void() {
	a.epoch++
	a.early = false
	if a.running != nil {
		a.running()
	}
}

func (a *tokenActor) stopTimers() {
	if a.proactive != nil {
		a.proactive.Stop()
		a.proactive = nil
	}
	if a.stale != nil {
		a.stale.Stop()
		a.stale = nil
	}
}

// tell delivers an event to the dispatcher's mailbox, and reports false
// when the dispatcher has stopped.
func (a *tokenActor) tell(ev any) bool {
	if _, stale := ev.(staleEvent); stale {
		// The gate closes before the dispatcher is told, and stays closed
		// until it has heard (it unblocks): no request on the fast path
		// carries the stale token meanwhile (gate.go).
		a.e.d.gate.block()
	}
	return a.e.d.post(ev)
}

// answer tells the dispatcher ev, which answers its demands, and answers
// the TokenSource calls waiting the same way.
func (a *tokenActor) answer(ev any) {
	a.tell(ev)
	switch ev := ev.(type) {
	case refreshedEvent:
		a.answerWanters(nil)
	case refreshFailedEvent:
		a.answerWanters(fmt.Errorf("%w: %w", errors.ErrRefreshFailed, ev.err))
	case expiredEvent:
		a.answerWanters(errors.ErrSessionExpired)
	}
}

func (a *tokenActor) answerWanters(err error) {
	for _, w := range a.wanters {
		w <- err
	}
	a.wanters = nil
}

func (a *tokenActor) onResult(r jobResult) {
	switch r.kind {
	case jobSave:
		a.onSaved(r)
	case jobPoll:
		if r.err != nil {
			a.e.log.Warn().Err(r.err).Msg("token store: poll")
		} else if r.newer {
			a.adopt(r.v)
		}
	case jobRefresh:
		a.onRefreshed(r)
	}
}

// saveLater retries a failed save after a pause, or before the next
// refresh, whichever comes first.
func (a *tokenActor) saveLater() {
	a.saveFailed = true
	if a.saveRetry == nil {
		a.saveRetry = a.e.s.Clock.NewTimer(storePoll)
	}
}

func (a *tokenActor) onSaved(r jobResult) {
	if r.err != nil {
		a.saveLater()
		a.e.log.Warn().Err(r.err).Msg("tokens not stored")
		if !a.expired && a.want >= a.gen() {
			a.want = 0
			a.answer(refreshFailedEvent{gen: a.gen(), err: r.err})
		}
	} else if r.newer {
		// A refresh's tokens came back to a store that had moved on.
		a.unsaved = nil
		a.adopt(r.v)
	} else {
		a.unsaved = nil
		a.stored = r.v.Generation
	}
	for _, done := range a.saveWaiters {
		close(done)
	}
	a.saveWaiters = nil
}

// adopt makes v, written to the store by someone else, the current tokens.
func (a *tokenActor) adopt(v StoredTokens) {
	a.stored = v.Generation
	a.refreshToken = v.RefreshToken
	if v.AccessToken == "" && v.RefreshToken == "" {
		// The session was ended where the store is shared.
		if !a.expired {
			a.expired = true
			a.want = 0
			a.publish(Tokens{})
			a.answer(expiredEvent{})
		}
		return
	}
	a.expired = false
	a.publish(v.Tokens)
	if a.unusable() {
		a.tell(staleEvent{gen: a.gen()}) // before the event that replays
	}
	a.e.log.Debug().Uint64("token_gen", a.gen()).Uint64("stored_gen", v.Generation).Msg("adopted newer tokens from the store")
	a.answer(refreshedEvent{gen: a.gen()})
}

func (a *tokenActor) onRefreshed(r jobResult) {
	var term *terminalError
	switch {
	case r.refreshed:
		a.refreshToken = r.issued.RefreshToken
		a.lastRefresh = a.e.s.Clock.Now()
		a.publish(r.issued)
		a.e.stats.refreshes.Add(1)
		a.e.tel.refreshed("success")
		if fn := a.e.s.Auth.OnTokenRefreshed; fn != nil {
			t := r.issued
			a.e.hooks.push("OnTokenRefreshed", func() { fn(t) })
		}
		if r.saveErr != nil {
			// The server has spent the old refresh token: keep the new
			// ones here and store them again (every storePoll, before the
			// next refresh and when the engine stops). The refresh worked,
			// so the requests that waited for it are replayed with the new
			// token; the failure is the store's, and is logged as such.
			t := r.issued
			a.unsaved = &t
			a.saveLater()
			a.e.log.Error().Err(r.saveErr).Uint64("token_gen", a.gen()).Uint64("stored_gen", a.stored).
				Msg("token refreshed but not stored; kept in memory and stored again later")
			a.answer(refreshedEvent{gen: a.gen()})
			return
		}
		a.stored = r.v.Generation
		a.e.log.Info().Uint64("token_gen", a.gen()).Uint64("stored_gen", a.stored).Msg("token refreshed")
		a.answer(refreshedEvent{gen: a.gen()})
	case r.err == nil && r.newer:
		a.adopt(r.v)
	case errors.As(r.err, &term):
		a.expired = true
		a.want = 0
		a.refreshToken = ""
		a.epoch++
		a.publish(Tokens{})
		a.e.tel.refreshed("refused")
		a.e.log.Warn().Err(r.err).Msg("refresh refused")
		a.answer(expiredEvent{err: r.err})
	default:
		a.want = 0
		a.e.tel.refreshed("failure")
		a.e.log.Warn().Err(r.err).Msg("refresh failed")
		a.answer(refreshFailedEvent{gen: a.gen(), err: r.err})
	}
}

// publish makes t the current tokens under a new generation, and arms the
// proactive refresh for it.
func (a *tokenActor) publish(t Tokens) {
	a.expiry = t.Expiry
	if a.expiry.IsZero() && t.ExpiresIn > 0 && t.ExpiresIn <= maxExpiresIn {
		a.expiry = a.e.s.Clock.Now().Add(t.ExpiresIn)
	}
	old := a.e.tokens.Load()
	a.e.tokens.Store(a.e.s.snapshot(t.AccessToken, old.gen+1, a.expiry))
	a.schedule()
}

// schedule arms the proactive refresh for the current generation, once:
// RefreshBefore ahead of its expiry, but never sooner than refreshFloor
// after the previous refresh.
func (a *tokenActor) schedule() {
	a.stopTimers()
	if a.expiry.IsZero() || !a.e.s.canRefresh() || (a.refreshToken == "" && a.e.s.needsRefreshToken()) {
		return
	}
	now := a.e.s.Clock.Now()
	before := a.e.s.Auth.RefreshBefore
	if before == 0 {
		before = min(a.expiry.Sub(now)/10, 30*time.Second)
	}
	at := a.expiry.Add(-before)
	if !a.lastRefresh.IsZero() {
		at = later(at, a.lastRefresh.Add(refreshFloor))
	}
	a.proactive = a.e.s.Clock.NewTimer(max(at.Sub(now), 0))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
