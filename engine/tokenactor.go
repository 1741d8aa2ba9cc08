package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/courier-go/courier/errors"
)

// tokenSnap is the published token state that workers read without a round
// trip to the actor. It is immutable once published.
type tokenSnap struct {
	access string
	header string // the auth header's value (scheme and token), "" without a token
	gen    uint64 // bumped by every refresh, SetTokens and termination
}

// snapshot builds the published token state for access.
func (s *settings) snapshot(access string, gen uint64) *tokenSnap {
	t := &tokenSnap{access: access, gen: gen}
	if access != "" {
		t.header = s.authPrefix + access
	}
	return t
}

// maxExpiresIn is the longest token lifetime believed; longer ones are
// ignored as nonsense.
const maxExpiresIn = 366 * 24 * time.Hour

// errTerminal marks a refresh failure that no retry can fix.
type terminalError struct{ err error }

func (t *terminalError) Error() string { return t.err.Error() }
func (t *terminalError) Unwrap() error { return t.err }

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
	refresh    string // current refresh token
	expiry     time.Time
	expired    bool
	refreshing bool
	epoch      uint64 // bumped when tokens are replaced, voiding a running refresh
	proactive  Timer
}

func newTokenActor(e *Engine) *tokenActor {
	ctx, cancel := context.WithCancel(context.Background())
	a := &tokenActor{
		e:       e,
		demands: make(chan uint64),
		inbox:   make(chan any),
		results: make(chan refreshResult),
		stop:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		refresh: e.s.Auth.RefreshToken,
	}
	e.tokens.Store(e.s.snapshot(e.s.Auth.AccessToken, 1))
	a.expiry = e.s.Auth.Expiry
	return a
}

// call delivers m to the actor and waits until it has been handled.
func (a *tokenActor) call(m any, done chan struct{}) {
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
			if !a.refreshing && !a.expired && a.refresh != "" {
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
				a.refresh = m.t.RefreshToken
				a.publish(m.t)
				close(m.done)
				a.tell(refreshedEvent{gen: a.e.tokens.Load().gen})
			case clearTokensMsg:
				a.epoch++
				a.expired = true
				a.refresh = ""
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
			r.t.RefreshToken = a.refresh // not rotated
		}
		a.refresh = r.t.RefreshToken
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
		a.refresh = ""
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
	if a.expiry.IsZero() || !a.e.s.canRefresh() || a.refresh == "" {
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
	rt, epoch := a.refresh, a.epoch
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
	req, err := a.newRefreshRequest(ctx, rt)
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

func (a *tokenActor) newRefreshRequest(ctx context.Context, rt string) (*http.Request, error) {
	s := a.e.s
	rc := s.Auth.Refresh
	u, err := s.base.Parse(rc.Path)
	if err != nil {
		return nil, fmt.Errorf("refresh: path %q: %w", rc.Path, err)
	}
	var body io.Reader
	var ctype string
	if rc.Form {
		form := url.Values{}
		for k, v := range rc.Body {
			form.Set(k, fmt.Sprint(v))
		}
		form.Set("grant_type", "refresh_token")
		form.Set(rc.RefreshTokenField, rt)
		if rc.ClientAuth == ClientAuthPost && rc.ClientID != "" {
			form.Set("client_id", rc.ClientID)
			form.Set("client_secret", rc.ClientSecret)
		}
		body, ctype = strings.NewReader(form.Encode()), "application/x-www-form-urlencoded"
	} else {
		fields := make(map[string]any, len(rc.Body)+1)
		for k, v := range rc.Body {
			fields[k] = v
		}
		fields[rc.RefreshTokenField] = rt
		b, err := json.Marshal(fields)
		if err != nil {
			return nil, fmt.Errorf("refresh: body: %w", err)
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, rc.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("refresh: %w", err)
	}
	for k, vs := range s.Headers {
		req.Header[k] = append([]string(nil), vs...)
	}
	for k, vs := range rc.Headers {
		req.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Accept", "application/json")
	if rc.ClientID != "" && rc.ClientAuth == ClientAuthBasic {
		// RFC 6749 section 2.3.1: form-encode each part before Basic.
		req.SetBasicAuth(url.QueryEscape(rc.ClientID), url.QueryEscape(rc.ClientSecret))
	}
	return req, nil
}

// FieldTokenParser returns a [TokenParser] for JSON answers shaped like RFC
// 6749 section 5.1, with the access and refresh tokens under the given
// field names. expires_in (seconds, a number or a numeric string) is read
// when it is sane: negative, zero or absurdly large values are ignored.
func FieldTokenParser(accessField, refreshField string) TokenParser {
	return func(body []byte) (Tokens, error) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return Tokens{}, fmt.Errorf("token answer is not a JSON object: %w", err)
		}
		var t Tokens
		raw, ok := m[accessField]
		if !ok {
			return Tokens{}, fmt.Errorf("token answer has no %q field", accessField)
		}
		if err := json.Unmarshal(raw, &t.AccessToken); err != nil || t.AccessToken == "" {
			return Tokens{}, fmt.Errorf("token answer's %q is not a non-empty string", accessField)
		}
		if raw, ok := m[refreshField]; ok {
			if err := json.Unmarshal(raw, &t.RefreshToken); err != nil {
				return Tokens{}, fmt.Errorf("token answer's %q is not a string", refreshField)
			}
		}
		if raw, ok := m["expires_in"]; ok {
			var n json.Number
			dec := json.NewDecoder(bytes.NewReader(bytes.Trim(raw, `"`)))
			dec.UseNumber()
			if dec.Decode(&n) == nil {
				if secs, err := n.Float64(); err == nil && secs > 0 && secs <= maxExpiresIn.Seconds() {
					t.ExpiresIn = time.Duration(secs * float64(time.Second))
				}
			}
		}
		return t, nil
	}
}

// DefaultTokenParser reads RFC 6749 section 5.1 answers: access_token, an
// optional rotated refresh_token, and expires_in.
var DefaultTokenParser = FieldTokenParser("access_token", "refresh_token")
