package engine

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/courier-go/courier/errors"
)

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
	inbox   chan any
	results chan refreshResult
	stop    chan struct{}
	ctx     context.Context // cancelled on stop; bounds refresh calls
	cancel  context.CancelFunc

	// Owned by the actor goroutine.
	refreshToken string // current refresh token
	expiry       time.Time
	expired      bool
	refreshing   bool
	epoch        uint64 // bumped when tokens are replaced, voiding a running refresh
	proactive    Timer
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
	}
	e.tokens.Store(e.s.snapshot(e.s.Auth.AccessToken, 1))
	a.expiry = e.s.Auth.Expiry
	return a
}

// call delivers m to the actor and waits until it has been handled.
func (a *tokenActor) ask(m any, done chan struct{}) {
	select {
	case a.inbox <- m:
		<-done
	case <-a.stop:
	}
}

func (a *tokenActor) run() {
	defer a.cancel()
	a.schedule()
	for {
		var proactive <-chan time.Time
		if a.proactive != nil {
			proactive = a.proactive.C()
		}
		select {
		case g := <-a.demands:
			cur := a.e.tokens.Load().gen
			switch {
			case cur > g:
				a.tell(refreshedEvent{gen: cur})
			case a.expired:
				a.tell(expiredEvent{})
			case !a.refreshing:
				a.start()
			}
		case <-proactive:
			a.proactive = nil
			if !a.refreshing && !a.expired && a.refreshToken != "" {
				a.e.log.Debug().Msg("refreshing token before expiry")
				a.start()
			}
		case r := <-a.results:
			a.refreshing = false
			if r.epoch == a.epoch {
				a.onResult(r)
			}
		case m := <-a.inbox:
			switch m := m.(type) {
			case setTokensMsg:
				a.epoch++
				a.expired = false
				a.refreshToken = m.t.RefreshToken
				a.publish(m.t)
				close(m.done)
				a.tell(refreshedEvent{gen: a.e.tokens.Load().gen})
			case clearTokensMsg:
				a.epoch++
				a.expired = true
				a.refreshToken = ""
				a.publish(Tokens{})
				close(m.done)
			}
		case <-a.stop:
			if a.proactive != nil {
				a.proactive.Stop()
			}
			a.cancel()
			if a.refreshing {
				<-a.results
			}
			return
		}
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
		a.publish(r.t)
		a.e.stats.refreshes.Add(1)
		if fn := a.e.s.Auth.OnTokenRefreshed; fn != nil {
			t := r.t
			t.Expiry = a.expiry
			a.e.hooks.push("OnTokenRefreshed", func() { fn(t) })
		}
		a.e.log.Info().Uint64("token_gen", a.e.tokens.Load().gen).Msg("token refreshed")
		a.tell(refreshedEvent{gen: a.e.tokens.Load().gen})
	case errors.As(r.err, &term):
		a.expired = true
		a.refreshToken = ""
		a.epoch++
		a.publish(Tokens{})
		a.e.log.Warn().Err(r.err).Msg("refresh refused")
		a.tell(expiredEvent{err: r.err})
	default:
		a.e.log.Warn().Err(r.err).Msg("refresh failed")
		a.tell(refreshFailedEvent{gen: a.e.tokens.Load().gen, err: r.err})
	}
}

// publish makes t the current tokens under a new generation.
func (a *tokenActor) publish(t Tokens) {
	old := a.e.tokens.Load()
	a.e.tokens.Store(a.e.s.snapshot(t.AccessToken, old.gen+1))
	a.expiry = t.Expiry
	if a.expiry.IsZero() && t.ExpiresIn > 0 && t.ExpiresIn <= maxExpiresIn {
		a.expiry = a.e.s.Clock.Now().Add(t.ExpiresIn)
	}
	a.schedule()
}

// schedule sets the proactive refresh timer for the current expiry.
func (a *tokenActor) schedule() {
	if a.proactive != nil {
		a.proactive.Stop()
		a.proactive = nil
	}
	if a.expiry.IsZero() || !a.e.s.canRefresh() || a.refreshToken == "" {
		return
	}
	now := a.e.s.Clock.Now()
	life := a.expiry.Sub(now)
	before := a.e.s.Auth.RefreshBefore
	if before == 0 {
		before = min(life/10, 30*time.Second)
	}
	a.proactive = a.e.s.Clock.NewTimer(max(life-before, 0))
}

// start runs one refresh, with its transient retries, in a goroutine the
// actor owns: the actor keeps answering while it runs.
func (a *tokenActor) start() {
	a.refreshing = true
	rt, epoch := a.refreshToken, a.epoch
	go func() {
		t, err := a.refreshWithRetries(rt)
		a.results <- refreshResult{epoch: epoch, t: t, err: err}
	}()
}

func (a *tokenActor) refreshWithRetries(rt string) (Tokens, error) {
	s := a.e.s
	attempts := DefaultRefreshAttempts
	if s.Auth.Refresh != nil {
		attempts = s.Auth.Refresh.MaxAttempts
	}
	var last error
	for i := 1; i <= attempts; i++ {
		t, err := a.refreshOnce(rt)
		if err == nil {
			return t, nil
		}
		last = err
		var term *terminalError
		if errors.As(err, &term) || a.ctx.Err() != nil || i == attempts {
			break
		}
		wait, err := a.e.backoff(i)
		if err != nil {
			return Tokens{}, err
		}
		timer := s.Clock.NewTimer(wait)
		select {
		case <-timer.C():
		case <-a.ctx.Done():
			timer.Stop()
			return Tokens{}, a.ctx.Err()
		}
	}
	return Tokens{}, last
}

func (a *tokenActor) refreshOnce(rt string) (t Tokens, err error) {
	s := a.e.s
	defer func() {
		if v := recover(); v != nil {
			err = &errors.PanicError{Where: "token refresh", Value: v, Stack: debug.Stack()}
		}
	}()
	ctx, cancel := context.WithTimeout(a.ctx, s.Timeout)
	defer cancel()
	if fn := s.Auth.Refresher; fn != nil {
		t, err := fn(ctx, rt)
		if errors.Is(err, errors.ErrSessionExpired) {
			return t, &terminalError{err}
		}
		if err == nil && t.AccessToken == "" {
			return t, &terminalError{fmt.Errorf("refresh: Refresher returned no access token")}
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
	resp, err := a.e.client.Do(req)
	if err != nil {
		return Tokens{}, fmt.Errorf("refresh: %w", err)
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
		return Tokens{}, fmt.Errorf("refresh: answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	t, err = s.Auth.Refresh.Parser(body)
	if err != nil {
		return Tokens{}, &terminalError{fmt.Errorf("refresh: %w", err)}
	}
	if t.AccessToken == "" {
		return Tokens{}, &terminalError{fmt.Errorf("refresh: answer has no access token")}
	}
	return t, nil
}
