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
	"github.com/courier-go/courier/internal/redact"
)

// The refresh wire protocol: the request a refresh sends, its retries of
// transient failures, the parsing of its answer, and which answers end the
// session (terminalError). Nothing here holds state; the token actor
// decides when to refresh.

// maxExpiresIn is the longest token lifetime believed; longer ones are
// ignored as nonsense.
const maxExpiresIn = 366 * 24 * time.Hour

// errTerminal marks a refresh failure that no retry can fix.
type terminalError struct{ err error }

func (t *terminalError) Error() string { return t.err.Error() }
func (t *terminalError) Unwrap() error { return t.err }

// permanentError marks a refresh failure that no retry can fix but that
// does not condemn the refresh token: a refresh endpoint that answers 404,
// redirects to another origin, or fails TLS verification. The refresh fails
// at once (ErrRefreshFailed); the session goes on.
type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// refreshEndpoint resolves a refresh endpoint's Path as request paths are
// resolved: an absolute URL is taken as it is; a path, with or without a
// leading "/", joins the base URL's path (base https://h/v1 and path
// /auth/refresh give https://h/v1/auth/refresh), and the base URL's query
// is kept under the path's own.
func refreshEndpoint(base *url.URL, path string) (*url.URL, error) {
	ref, err := url.Parse(path)
	if err != nil {
		return nil, redactErr(err)
	}
	if ref.IsAbs() {
		if ref.Scheme != "http" && ref.Scheme != "https" {
			return nil, fmt.Errorf("scheme must be http or https")
		}
		if ref.Host == "" {
			return nil, fmt.Errorf("no host")
		}
		return ref, nil
	}
	if ref.Host != "" || ref.User != nil {
		return nil, fmt.Errorf("starts with // (a host without a scheme); use a full URL or one /")
	}
	u := base.JoinPath(ref.EscapedPath())
	u.RawQuery = ref.RawQuery
	if base.RawQuery != "" {
		u.RawQuery = withBaseQuery(base.Query(), u.RawQuery)
	}
	return u, nil
}

// newRefreshRequest builds the refresh call for refresh token rt (unused
// by the client-credentials grant).
func newRefreshRequest(ctx context.Context, s *settings, rt string) (*http.Request, error) {
	rc := s.Auth.Refresh
	u := s.refreshURL
	var body io.Reader
	var ctype string
	if rc.Form {
		form := url.Values{}
		for k, v := range rc.Body {
			form.Set(k, fmt.Sprint(v))
		}
		form.Set("grant_type", string(rc.Grant))
		if rc.Grant == GrantRefreshToken {
			form.Set(rc.RefreshTokenField, rt)
		}
		if len(rc.Scopes) > 0 {
			form.Set("scope", strings.Join(rc.Scopes, " "))
		}
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
	if origin(u) == s.origin {
		// The caller's headers may carry credentials of their own: they go
		// to the API's origin only, not to another token endpoint.
		for k, vs := range s.Headers {
			req.Header[k] = append([]string(nil), vs...)
		}
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

// checkTokens reports a token that cannot be used, without quoting it: an
// access token that is not an RFC 6750 b64token when it goes out as a
// Bearer token (not a valid header value under another scheme or header),
// or a refresh token that is not RFC 6749 VSCHARs. A CR, LF or NUL in either
// would break every request that carries it.
func (s *settings) checkTokens(t Tokens) error {
	if s.authPrefix == "Bearer " {
		if !b64token(t.AccessToken) {
			return fmt.Errorf("an access token that is not a valid Bearer token (RFC 6750 b64token)")
		}
	} else if t.AccessToken != strings.TrimSpace(t.AccessToken) || !validHeaderValue(t.AccessToken) {
		return fmt.Errorf("an access token that is not a valid %s header value", s.authHeader)
	}
	for i := 0; i < len(t.RefreshToken); i++ {
		if c := t.RefreshToken[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("a refresh token with characters outside RFC 6749 VSCHAR")
		}
	}
	return nil
}

// b64token reports whether v is an RFC 6750 section 2.1 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func b64token(v string) bool {
	i := 0
	for i < len(v) {
		c := v[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0 {
			i++
			continue
		}
		break
	}
	if i == 0 {
		return false
	}
	for ; i < len(v); i++ {
		if v[i] != '=' {
			return false
		}
	}
	return true
}

// maxRefusalText bounds the error code and description quoted from a
// token endpoint's refusal.
const maxRefusalText = 256

// refreshRefusal reads a token endpoint's answer outside 2xx into a
// *errors.RefreshError: the endpoint, the status and, when the body is a
// JSON object that has them, RFC 6749 section 5.2's error and
// error_description. secrets are what the refresh sent (tokens, the
// client secret): an endpoint that quotes one back does not get it into
// an error.
func refreshRefusal(req *http.Request, status int, body []byte, secrets ...string) *errors.RefreshError {
	re := &errors.RefreshError{Method: req.Method, URL: redact.URL(req.URL), Status: status}
	var answer struct {
		Code        any `json:"error"`
		Description any `json:"error_description"`
	}
	if json.Unmarshal(body, &answer) != nil {
		return re
	}
	code, _ := answer.Code.(string)
	desc, _ := answer.Description.(string)
	re.Code = refusalText(code, secrets)
	re.Description = refusalText(desc, secrets)
	return re
}

// refusalText is v as an error may quote it: without secrets, printable
// ASCII only, URLs without their query, at most maxRefusalText bytes.
func refusalText(v string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 { // shorter ones would redact ordinary words
			v = strings.ReplaceAll(v, sec, "[redacted]")
		}
	}
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, v)
	v = redactText(strings.TrimSpace(v))
	if len(v) > maxRefusalText {
		v = v[:maxRefusalText]
	}
	return v
}

// refreshWithRetries refreshes cur, retrying transient failures. Each
// attempt runs on sendCtx; wait ends the pauses between them, and stops a
// new attempt from starting once the engine stops.
func (a *tokenActor) refreshWithRetries(sendCtx, wait context.Context, cur Tokens) (Tokens, error) {
	s := a.e.s
	attempts := DefaultRefreshAttempts
	if s.Auth.Refresh != nil {
		attempts = s.Auth.Refresh.MaxAttempts
	}
	var last error
	for i := 1; i <= attempts; i++ {
		if err := wait.Err(); err != nil {
			return Tokens{}, err
		}
		t, err := a.refreshOnce(sendCtx, cur)
		if err == nil {
			return t, nil
		}
		last = err
		var term *terminalError
		var perm *permanentError
		if errors.As(err, &term) || errors.As(err, &perm) || sendCtx.Err() != nil || i == attempts {
			break
		}
		pause, err := a.e.backoff(i)
		if err != nil {
			return Tokens{}, err
		}
		timer := s.Clock.NewTimer(pause)
		select {
		case <-timer.C():
		case <-wait.Done():
			timer.Stop()
			return Tokens{}, wait.Err()
		}
	}
	return Tokens{}, redactErr(last)
}

// refreshOnce makes one refresh of cur: a call to the refresh endpoint,
// the Refresher or the TokenSource.
func (a *tokenActor) refreshOnce(ctx context.Context, cur Tokens) (t Tokens, err error) {
	rt := cur.RefreshToken
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
	if ts := s.Auth.TokenSource; ts != nil {
		t, err := tokenFromSource(ts, cur.AccessToken)
		if err == nil {
			if verr := s.checkTokens(t); verr != nil {
				return Tokens{}, &terminalError{fmt.Errorf("refresh: token source returned %w", verr)}
			}
		}
		return t, err
	}
	if rt == "" && s.needsRefreshToken() {
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
		return Tokens{}, fmt.Errorf("refresh: %s %s: %w", req.Method, redact.URL(req.URL), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The answer's RFC 6749 error code and description go into the
		// error, without the secrets this refresh sent.
		re := refreshRefusal(req, resp.StatusCode, body, rt, cur.AccessToken, s.Auth.Refresh.ClientSecret)
		switch {
		case re.Refused():
			return Tokens{}, &terminalError{re}
		case !RetryableStatus(resp.StatusCode) && resp.StatusCode < 500 || resp.StatusCode == http.StatusNotImplemented:
			// 404, 405, 410...: a wrong endpoint stays wrong.
			return Tokens{}, &permanentError{re}
		}
		return Tokens{}, re
	}
	t, err = s.Auth.Refresh.Parser(body)
	if err != nil {
		return Tokens{}, &terminalError{fmt.Errorf("refresh: %s %s: %w", req.Method, redact.URL(req.URL), err)}
	}
	if t.AccessToken == "" {
		return Tokens{}, &terminalError{fmt.Errorf("refresh: %s %s: answer has no access token", req.Method, redact.URL(req.URL))}
	}
	if err := s.checkTokens(t); err != nil {
		// As unusable as an answer that does not parse, and as final.
		return Tokens{}, &terminalError{fmt.Errorf("refresh: %s %s: answer has %w", req.Method, redact.URL(req.URL), err)}
	}
	return t, nil
}
