package engine

import (
	"context"
	"fmt"

	"golang.org/x/oauth2"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/redact"
)

// Interop with golang.org/x/oauth2, both ways: an oauth2.TokenSource can
// provide the engine's tokens (Auth.TokenSource), and the engine's tokens
// can feed an SDK that wants an oauth2.TokenSource (Engine.TokenSource).

// tokenFromSource asks ts for a token to replace the rejected access
// token. A source that answers with the rejected token again cannot help:
// that is a failed refresh, not a new token.
func tokenFromSource(ts oauth2.TokenSource, rejected string) (Tokens, error) {
	tok, err := ts.Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			// The message would quote the endpoint's body; say what RFC
			// 6749 section 5.2 says, without the token sent.
			rerr := &errors.RefreshError{
				Status:      re.Response.StatusCode,
				Code:        refusalText(re.ErrorCode, nil),
				Description: refusalText(re.ErrorDescription, []string{rejected}),
			}
			if r := re.Response.Request; r != nil {
				rerr.Method, rerr.URL = r.Method, redact.URL(r.URL)
			}
			if rerr.Refused() {
				return Tokens{}, &terminalError{rerr}
			}
			return Tokens{}, rerr
		}
		return Tokens{}, fmt.Errorf("refresh: token source: %w", err)
	}
	switch {
	case tok == nil || tok.AccessToken == "":
		return Tokens{}, &terminalError{fmt.Errorf("refresh: token source returned no access token")}
	case tok.AccessToken == rejected:
		return Tokens{}, fmt.Errorf("refresh: token source returned the rejected token again")
	}
	return Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry}, nil
}

// TokenSource returns the engine's tokens as an [oauth2.TokenSource], for
// SDKs built on golang.org/x/oauth2. Its Token returns the current access
// token and its expiry. When there is none, or its known expiry has
// passed, Token asks the engine to refresh (one refresh per stale token,
// shared with the engine's own requests) and waits for it, at most
// Config.Timeout for each refresh attempt. It returns an error matching
// ErrSessionExpired once the session has ended, and ErrClosed after
// Shutdown or Close.
//
// The token carries no refresh token: the engine rotates it, and a copy
// refreshed elsewhere would end the session. An SDK that gets a 401 with
// this token should call [Engine.SetTokens] or let the engine's own
// requests trigger the refresh.
//
// The source is safe for concurrent use.
func (e *Engine) TokenSource() oauth2.TokenSource { return engineTokenSource{e} }

type engineTokenSource struct{ e *Engine }

func (ts engineTokenSource) Token() (*oauth2.Token, error) {
	e := ts.e
	snap := e.tokens.Load()
	if snap.access != "" && (snap.expiry.IsZero() || e.s.Clock.Now().Before(snap.expiry)) {
		return snap.oauth2Token(e.s), nil
	}
	if !e.s.canRefresh() {
		if snap.access == "" {
			return nil, fmt.Errorf("courier: no access token, and no way to refresh one")
		}
		return snap.oauth2Token(e.s), nil // expired by its clock; the server decides
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.s.refreshBound())
	defer cancel()
	if err := e.actor.wait(ctx, snap.gen); err != nil {
		return nil, err
	}
	snap = e.tokens.Load()
	if snap.access == "" {
		return nil, errors.ErrSessionExpired
	}
	return snap.oauth2Token(e.s), nil
}

// oauth2Token is the snapshot as an oauth2 token.
func (t *tokenSnap) oauth2Token(s *settings) *oauth2.Token {
	typ := "Bearer"
	if s.authPrefix != "Bearer " {
		typ = ""
		if s.authPrefix != "" {
			typ = s.authPrefix[:len(s.authPrefix)-1]
		}
	}
	return &oauth2.Token{AccessToken: t.access, TokenType: typ, Expiry: t.expiry}
}
