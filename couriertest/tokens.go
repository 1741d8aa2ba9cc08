package couriertest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The token endpoints and the bearer check. Every token is random; the
// maps of API hold what each one is worth.

// issue makes a token pair for session sess; a.mu must be held.
func (a *API) issue(sess int) Tokens {
	t := a.issueAccess(sess)
	t.RefreshToken = "rt_" + randomHex()
	a.refresh[t.RefreshToken] = &refreshToken{session: sess}
	return t
}

// issueAccess makes an access token alone for session sess; a.mu must be
// held.
func (a *API) issueAccess(sess int) Tokens {
	at := &accessToken{session: sess, usesLeft: -1}
	if a.cfg.accessUses > 0 {
		at.usesLeft = a.cfg.accessUses
	}
	t := Tokens{AccessToken: "at_" + randomHex(), TokenType: "Bearer"}
	if a.cfg.accessTTL > 0 {
		at.expires = a.cfg.now().Add(a.cfg.accessTTL)
		t.ExpiresIn = int(a.cfg.accessTTL / time.Second)
	}
	a.access[t.AccessToken] = at
	return t
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var creds struct{ Username, Password string }
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&creds); err != nil {
			writeJSON(w, 400, apiError{"invalid_request", "body is not JSON"})
			return
		}
	} else {
		creds.Username, creds.Password = r.FormValue("username"), r.FormValue("password")
	}
	if creds.Username != a.cfg.username || creds.Password != a.cfg.password {
		writeJSON(w, 401, apiError{"invalid_credentials", "wrong username or password"})
		return
	}
	writeJSON(w, 200, a.Login())
}

func (a *API) refreshTokens(w http.ResponseWriter, r *http.Request) {
	var rt string
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var body map[string]any
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil {
			writeJSON(w, 400, apiError{"invalid_request", "body is not JSON"})
			return
		}
		rt, _ = body["refresh_token"].(string)
	} else {
		if r.FormValue("grant_type") != "refresh_token" {
			writeJSON(w, 400, apiError{"unsupported_grant_type", "grant_type must be refresh_token"})
			return
		}
		rt = r.FormValue("refresh_token")
	}
	a.answerRefresh(w, rt)
}

// answerRefresh exchanges refresh token rt and answers with the new
// tokens.
func (a *API) answerRefresh(w http.ResponseWriter, rt string) {
	t, refusal := a.rotate(rt)
	if refusal != nil {
		a.refused.Add(1)
		writeJSON(w, 400, refusal)
		return
	}
	if a.cfg.holdRefresh != nil {
		a.cfg.holdRefresh()
	}
	writeJSON(w, 200, t)
	if a.cfg.refreshAnswered != nil {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		a.cfg.refreshAnswered()
	}
}

// rotate spends refresh token rt for new tokens, or says why not.
func (a *API) rotate(rt string) (Tokens, *apiError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, ok := a.refresh[rt]
	switch {
	case !ok:
		return Tokens{}, &apiError{"invalid_grant", "unknown refresh token"}
	case old.used:
		// Reuse of a rotated refresh token: someone else may hold it. End
		// the session, as RFC 6819 section 5.2.2.3 advises.
		a.reuse.Add(1)
		a.sessions[old.session].revoked = true
		return Tokens{}, &apiError{"invalid_grant", "refresh token reused; session revoked"}
	case a.sessions[old.session].revoked:
		return Tokens{}, &apiError{"invalid_grant", "session revoked"}
	}
	a.refreshes.Add(1)
	if a.cfg.noRotation {
		return a.issueAccess(old.session), nil
	}
	old.used = true
	return a.issue(old.session), nil
}

// token is an OAuth 2.0 token endpoint (RFC 6749 section 3.2) for a
// confidential client: the refresh_token grant and the client_credentials
// grant (section 4.4, an access token and no refresh token). The client
// authenticates with HTTP Basic or with client_id and client_secret form
// fields, not both.
func (a *API) token(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		writeJSON(w, 400, apiError{"invalid_request", "the body must be form-encoded"})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, 400, apiError{"invalid_request", "the form cannot be parsed"})
		return
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 section 2.3.1: each part is form-encoded before Basic.
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil || r.PostForm.Has("client_secret") {
			writeJSON(w, 400, apiError{"invalid_request", "bad client authentication"})
			return
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != a.cfg.clientID || secret != a.cfg.clientSecret {
		w.Header().Set("WWW-Authenticate", `Basic realm="couriertest"`)
		writeJSON(w, 401, apiError{"invalid_client", "unknown client or wrong secret"})
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		a.mu.Lock()
		a.nextSess++
		a.sessions[a.nextSess] = &session{}
		t := a.issueAccess(a.nextSess)
		a.mu.Unlock()
		a.clientGrants.Add(1)
		if sc := r.PostForm.Get("scope"); sc != "" {
			t.Scope = sc
		}
		writeJSON(w, 200, t)
	case "refresh_token":
		a.answerRefresh(w, r.PostForm.Get("refresh_token"))
	default:
		writeJSON(w, 400, apiError{"unsupported_grant_type", "grant_type must be client_credentials or refresh_token"})
	}
}

// authed checks the bearer token before h.
func (a *API) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.valid(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			a.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, 401, apiError{"invalid_token", "access token missing, expired or revoked"})
			return
		}
		h(w, r)
	})
}

// valid reports whether token may be used now, and uses it once.
func (a *API) valid(token string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.access[token]
	switch {
	case !ok, at.expired, a.sessions[at.session].revoked:
		return false
	case !at.expires.IsZero() && !a.cfg.now().Before(at.expires):
		return false
	case at.usesLeft == 0:
		return false
	}
	if at.usesLeft > 0 {
		at.usesLeft--
	}
	return true
}
