package engine

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
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
//     newer. SetTokens then tells refreshedEvent with the new generation,
//     which answers every demand made so far. TerminateSession marks the
//     session ended (the engine has already made the dispatcher fail what
//     waits and pause, with a terminateMsg); later demands are answered with
//     expiredEvent until SetTokens.
//   - The refresh goroutine (start) sends exactly one refreshResult, tagged
//     with the epoch it started in, and the actor waits for it before it
//     exits. A result of a voided epoch is dropped, but if a demand for the
//     current generation came meanwhile, a new refresh starts at once, so
//     that demand is answered by it.
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
//     expiry of the current generation passed) means "do not send gen: before
//     the next request that would carry it, demand a refresh past gen and
//     hold the requests that would carry it until the demand is answered". An
//     idle engine thus never refreshes a dead token, and a busy one refreshes
//     it once, before the request.
//
// Every event goes to the dispatcher's inbox, which always receives, so the
// actor never blocks for long on the dispatcher, and the dispatcher, which
// only offers a demand as one case of its select, never blocks on the actor.

// refreshFloor is the least time between the end of one refresh and a
// proactive refresh of the token it produced, so that a server answering
// with tiny lifetimes cannot make the engine refresh in a loop.
const refreshFloor = time.Second

// Messages to the token actor.
type (
	setTokensMsg struct {
		t    Tokens
		done chan struct{}
	}
	clearTokensMsg struct{ done chan struct{} }
	refreshResult  struct {
		epoch uint64
		t     Tokens
		err   error
	}
)

// tokenActor is the goroutine that owns the tokens and serializes refresh:
// one refresh at a time, and none for a generation already replaced.
type tokenActor struct {
	e       *Engine
	demands chan uint64 // from the dispatcher: refresh past this generation
	inbox   chan any    // setTokensMsg and clearTokensMsg
	results chan refreshResult
	stop    chan struct{}   // closed by the engine after the dispatcher has returned
	ctx     context.Context // cancelled on stop; bounds refresh calls
	cancel  context.CancelFunc

	client *http.Client // for refresh calls: redirects stay on the endpoint's origin

	// Owned by the actor goroutine.
	refreshToken string // current refresh token
	expiry       time.Time
	expired      bool               // the session has ended: no refresh until SetTokens
	running      context.CancelFunc // cancels the refresh in flight; nil when none runs
	epoch        uint64             // bumped when tokens are replaced, voiding a running refresh
	want         uint64             // highest generation demanded; outstanding while >= the current one
	lastRefresh  time.Time          // when the latest refresh was published
	proactive    Timer              // refresh ahead of the expiry; nil when not armed
	stale        Timer              // the expiry itself, while an early refresh runs
	staleGen     uint64             // the generation stale was armed for
}

func newTokenActor(e *Engine) *tokenActor {
	ctx, cancel := context.WithCancel(context.Background())
	a := &tokenActor{
		e:            e,
		demands:      make(chan uint64),
		inbox:        make(chan any),
		results:      make(chan refreshResult),
		stop:         make(chan struct{}),
		ctx:          ctx,
		cancel:       cancel,
		refreshToken: e.s.Auth.RefreshToken,
		client:       refreshClient(e.client),
	}
	e.tokens.Store(e.s.snapshot(e.s.Auth.AccessToken, firstGen))
	a.expiry = e.s.Auth.Expiry
	return a
}

// ask delivers m to the actor and waits until it has been handled.
func (a *tokenActor) ask(m any, done chan struct{}) {
	select {
	case a.inbox <- m:
		<-done
	case <-a.stop:
	}
}

func (a *tokenActor) gen() uint64 { return a.e.tokens.Load().gen }

func (a *tokenActor) run() {
	defer a.cancel()
	a.schedule()
	for {
		var proactive, stale <-chan time.Time
		if a.proactive != nil {
			proactive = a.proactive.C()
		}
		if a.stale != nil {
			stale = a.stale.C()
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
		case r := <-a.results:
			a.running = nil
			if r.epoch == a.epoch {
				a.onResult(r)
			} else if a.want >= a.gen() && !a.expired {
				// Voided by SetTokens, while the new token was rejected too:
				// that demand is answered by a refresh of its own.
				a.start()
			}
		case m := <-a.inbox:
			switch m := m.(type) {
			case setTokensMsg:
				a.void()
				a.expired = false
				a.refreshToken = m.t.RefreshToken
				a.publish(m.t)
				close(m.done)
				a.tell(refreshedEvent{gen: a.gen()})
			case clearTokensMsg:
				a.void()
				a.expired = true
				a.want = 0
				a.refreshToken = ""
				a.publish(Tokens{})
				close(m.done)
			}
		case <-a.stop:
			a.stopTimers()
			a.cancel()
			if a.running != nil {
				<-a.results
			}
			return
		}
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
		if a.running == nil {
			a.start()
		}
		// Otherwise the refresh in flight answers: its result if it is of
		// this epoch, a new refresh if it was voided.
	}
}

// onProactive refreshes ahead of the expiry, or, when the expiry has
// already passed, tells the dispatcher to demand a refresh before sending
// the token again.
func (a *tokenActor) onProactive() {
	if a.expired || a.refreshToken == "" {
		return
	}
	gen, now := a.gen(), a.e.s.Clock.Now()
	if !now.Before(a.expiry) {
		a.tell(staleEvent{gen: gen})
		return
	}
	a.e.log.Debug().Uint64("token_gen", gen).Msg("refreshing token before expiry")
	if a.running == nil {
		a.start()
	}
	a.staleGen = gen
	a.stale = a.e.s.Clock.NewTimer(a.expiry.Sub(now))
}

// void cancels the refresh in flight, if any, whose result will be dropped.
func (a *tokenActor) void() {
	a.epoch++
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

// tell sends an event to the dispatcher, which always receives.
func (a *tokenActor) tell(ev any) {
	a.e.d.post(ev)
}

func (a *tokenActor) onResult(r refreshResult) {
	var term *terminalError
	switch {
	case r.err == nil:
		if r.t.RefreshToken == "" {
			r.t.RefreshToken = a.refreshToken // not rotated
		}
		a.refreshToken = r.t.RefreshToken
		a.lastRefresh = a.e.s.Clock.Now()
		a.publish(r.t)
		a.e.stats.refreshes.Add(1)
		a.e.tel.refreshed("success")
		if fn := a.e.s.Auth.OnTokenRefreshed; fn != nil {
			t := r.t
			t.Expiry = a.expiry
			a.e.hooks.push("OnTokenRefreshed", func() { fn(t) })
		}
		a.e.log.Info().Uint64("token_gen", a.gen()).Msg("token refreshed")
		a.tell(refreshedEvent{gen: a.gen()})
	case errors.As(r.err, &term):
		a.expired = true
		a.want = 0
		a.refreshToken = ""
		a.epoch++
		a.publish(Tokens{})
		a.e.tel.refreshed("refused")
		a.e.log.Warn().Err(r.err).Msg("refresh refused")
		a.tell(expiredEvent{err: r.err})
	default:
		a.want = 0
		a.e.tel.refreshed("failure")
		a.e.log.Warn().Err(r.err).Msg("refresh failed")
		a.tell(refreshFailedEvent{gen: a.gen(), err: r.err})
	}
}

// publish makes t the current tokens under a new generation, and arms the
// proactive refresh for it.
func (a *tokenActor) publish(t Tokens) {
	old := a.e.tokens.Load()
	a.e.tokens.Store(a.e.s.snapshot(t.AccessToken, old.gen+1))
	a.expiry = t.Expiry
	if a.expiry.IsZero() && t.ExpiresIn > 0 && t.ExpiresIn <= maxExpiresIn {
		a.expiry = a.e.s.Clock.Now().Add(t.ExpiresIn)
	}
	a.schedule()
}

// schedule arms the proactive refresh for the current generation, once:
// RefreshBefore ahead of its expiry, but never sooner than refreshFloor
// after the previous refresh.
func (a *tokenActor) schedule() {
	a.stopTimers()
	if a.expiry.IsZero() || !a.e.s.canRefresh() || a.refreshToken == "" {
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

// start runs one refresh, with its transient retries, in a goroutine the
// actor owns: the actor keeps answering while it runs, and waits for its
// result before it exits.
func (a *tokenActor) start() {
	ctx, cancel := context.WithCancel(a.ctx)
	a.running = cancel
	rt, epoch := a.refreshToken, a.epoch
	go func() {
		defer cancel()
		t, err := a.refreshWithRetries(ctx, rt)
		a.results <- refreshResult{epoch: epoch, t: t, err: err}
	}()
}

func (a *tokenActor) refreshWithRetries(ctx context.Context, rt string) (Tokens, error) {
	s := a.e.s
	attempts := DefaultRefreshAttempts
	if s.Auth.Refresh != nil {
		attempts = s.Auth.Refresh.MaxAttempts
	}
	var last error
	for i := 1; i <= attempts; i++ {
		t, err := a.refreshOnce(ctx, rt)
		if err == nil {
			return t, nil
		}
		last = err
		var term *terminalError
		var perm *permanentError
		if errors.As(err, &term) || errors.As(err, &perm) || ctx.Err() != nil || i == attempts {
			break
		}
		wait, err := a.e.backoff(i)
		if err != nil {
			return Tokens{}, err
		}
		timer := s.Clock.NewTimer(wait)
		select {
		case <-timer.C():
		case <-ctx.Done():
			timer.Stop()
			return Tokens{}, ctx.Err()
		}
	}
	return Tokens{}, redactErr(last)
}

func (a *tokenActor) refreshOnce(ctx context.Context, rt string) (t Tokens, err error) {
	s := a.e.s
	defer func() {
		if v := recover(); v != nil {
			err = &errors.PanicError{Where: "token refresh", Value: v, Stack: debug.Stack()}
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	if fn := s.Auth.Refresher; fn != nil {
		t, err := fn(ctx, rt)
		if errors.Is(err, errors.ErrSessionExpired) {
			return t, &terminalError{err}
		}
		if err == nil && t.AccessToken == "" {
			return t, &terminalError{fmt.Errorf("refresh: Refresher returned no access token")}
		}
		if err == nil {
			if verr := s.checkTokens(t); verr != nil {
				return Tokens{}, &terminalError{fmt.Errorf("refresh: Refresher returned %w", verr)}
			}
		}
		return t, err
	}
	if rt == "" {
		return Tokens{}, &terminalError{fmt.Errorf("refresh: no refresh token")}
	}
	req, err := newRefreshRequest(ctx, s, rt)
	if err != nil {
		return Tokens{}, &terminalError{err}
	}
	resp, err := a.client.Do(req)
	if err != nil {
		err = fmt.Errorf("refresh: %w", redactErr(err))
		if cannotSucceed(err) {
			return Tokens{}, &permanentError{err}
		}
		return Tokens{}, err
	}
	body, err := readBounded(resp.Body, 1<<20)
	closeBody(resp.Body)
	if err != nil {
		return Tokens{}, fmt.Errorf("refresh: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		return Tokens{}, &terminalError{fmt.Errorf("refresh: refused with %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))}
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		err := fmt.Errorf("refresh: answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		if !RetryableStatus(resp.StatusCode) && resp.StatusCode < 500 || resp.StatusCode == http.StatusNotImplemented {
			// 404, 405, 410...: a wrong endpoint stays wrong.
			return Tokens{}, &permanentError{err}
		}
		return Tokens{}, err
	}
	t, err = s.Auth.Refresh.Parser(body)
	if err != nil {
		return Tokens{}, &terminalError{fmt.Errorf("refresh: %w", err)}
	}
	if t.AccessToken == "" {
		return Tokens{}, &terminalError{fmt.Errorf("refresh: answer has no access token")}
	}
	if err := s.checkTokens(t); err != nil {
		// As unusable as an answer that does not parse, and as final.
		return Tokens{}, &terminalError{fmt.Errorf("refresh: answer has %w", err)}
	}
	return t, nil
}
