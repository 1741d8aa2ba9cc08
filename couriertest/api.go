package couriertest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-go/courier/engine"
)

// Stats counts what an [API] has seen. Read it with [API.Stats]; each
// call returns a copy.
type Stats struct {
	// Requests counts every request, scripted faults included.
	Requests int64 `json:"requests"`
	// Paths counts the requests of each path (without its query).
	Paths map[string]int64 `json:"paths"`
	// Logins counts sessions started by POST /auth/login or [API.Login].
	Logins int64 `json:"logins"`
	// Refreshes counts refresh tokens successfully exchanged for new
	// tokens, by either token endpoint.
	Refreshes int64 `json:"refreshes"`
	// RefreshReuse counts refresh tokens presented again after they were
	// rotated away; each revoked its session.
	RefreshReuse int64 `json:"refresh_reuse"`
	// RefreshRefused counts refreshes refused for any reason, reuse
	// included.
	RefreshRefused int64 `json:"refresh_refused"`
	// Unauthorized counts 401s: a token missing, expired or revoked.
	Unauthorized int64 `json:"unauthorized"`
	// Faults counts scripted faults served (see [WithFaults]), and Flaky
	// the failures of /flaky/{id} (see [WithFlakyPercent]).
	Faults int64 `json:"faults"`
	Flaky  int64 `json:"flaky"`
	// Resets counts connections closed without an answer: scripted
	// resets and those of /reset/{id}.
	Resets int64 `json:"resets"`
	// RateLimited counts requests refused with a 429 past the quota of
	// [WithRateLimit].
	RateLimited int64 `json:"rate_limited"`
	// NotModified counts 304 answers to If-None-Match.
	NotModified int64 `json:"not_modified"`
	// Creates counts POST /items that applied (a replay with a known
	// Idempotency-Key does not), Uploads the POST /upload that parsed.
	Creates int64 `json:"creates"`
	Uploads int64 `json:"uploads"`
	// ClientGrants counts tokens issued by the client-credentials grant.
	ClientGrants int64 `json:"client_grants"`
}

// API is the test API as an [http.Handler], for tests that serve it
// themselves (an [httptest.Server] of their own, several listeners, an
// in-process RoundTripper); [NewServer] serves one on a loopback port. An
// API is safe for concurrent use. The zero value is not usable: make one
// with [NewAPI].
//
// Endpoints (all JSON; all but /auth/*, /oauth/token, /healthz and /stats
// need a bearer token):
//
//	POST /auth/login      {"username","password"} or a form -> tokens
//	POST /auth/refresh    {"refresh_token"} or the OAuth 2.0 form -> tokens
//	POST /oauth/token     OAuth 2.0 token endpoint for a confidential client
//	                      (Basic or form client auth): grant_type
//	                      refresh_token or client_credentials
//	GET  /items/{id}      one item, with an ETag (304 on If-None-Match)
//	GET  /items           a page of items: ?page=N&per_page=M,
//	                      ?offset=N&limit=M or ?cursor=C&limit=M; a Link
//	                      header (next, prev, first, last), the totals and
//	                      next_cursor in the body, an ETag
//	POST /items           create (an Idempotency-Key makes it apply once)
//	GET  /flaky/{id}      fails its first attempt for some ids (503/429)
//	GET  /reset/{id}      resets the connection on its first attempt
//	GET  /slow/{id}?ms=N  sends its body in pieces over N ms
//	POST /upload          multipart; answers each part's size and SHA-256
//	GET  /redirect?to=U   302 to U
//	GET  /healthz, /stats
//
// Refresh tokens rotate: each refresh answers a new pair and spends the
// refresh token it was given. A spent refresh token presented again is
// taken for a stolen one and revokes its whole session (RFC 6819 section
// 5.2.2.3): every token of that session stops working.
type API struct {
	cfg     config // set by NewAPI, read-only after
	mux     *http.ServeMux
	initial Tokens    // the first session's tokens, issued by NewAPI
	expiry  time.Time // when initial's access token expires; zero: never

	mu       sync.Mutex // protects the maps below and the scripts' counts
	access   map[string]*accessToken
	refresh  map[string]*refreshToken
	sessions map[int]*session
	attempts map[string]int    // per /flaky and /reset path: attempts seen
	created  map[string][]byte // Idempotency-Key -> answer
	paths    map[string]int64  // requests per path
	nextSess int
	rate     rateWindow

	requests, logins, refreshes, reuse, refused, unauthorized, faults, flaky, resets,
	rateLimited, notModified, creates, uploads, clientGrants atomic.Int64
}

type session struct{ revoked bool }

type accessToken struct {
	session  int
	expired  bool      // by ExpireTokens
	expires  time.Time // zero: none
	usesLeft int       // -1: unlimited
}

type refreshToken struct {
	session int
	used    bool
}

// NewAPI returns the test API configured by opts, with one session
// started: its tokens are [API.Tokens].
func NewAPI(opts ...Option) *API {
	a := &API{
		cfg: defaults(), mux: http.NewServeMux(),
		access: map[string]*accessToken{}, refresh: map[string]*refreshToken{},
		sessions: map[int]*session{}, attempts: map[string]int{}, created: map[string][]byte{},
		paths: map[string]int64{},
	}
	for _, o := range opts {
		o(&a.cfg)
	}
	a.mu.Lock()
	a.initial = a.startSession()
	a.expiry = a.access[a.initial.AccessToken].expires
	a.mu.Unlock()

	a.mux.HandleFunc("POST /auth/login", a.login)
	a.mux.HandleFunc("POST /auth/refresh", a.refreshTokens)
	a.mux.HandleFunc("POST /oauth/token", a.token)
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]bool{"ok": true}) })
	a.mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, a.Stats()) })
	a.mux.Handle("GET /items/{id}", a.authed(a.item))
	a.mux.Handle("GET /items", a.authed(a.items))
	a.mux.Handle("POST /items", a.authed(a.create))
	a.mux.Handle("GET /flaky/{id}", a.authed(a.flakyItem))
	a.mux.Handle("GET /reset/{id}", a.authed(a.reset))
	a.mux.Handle("GET /slow/{id}", a.authed(a.slow))
	a.mux.Handle("POST /upload", a.authed(a.upload))
	a.mux.Handle("GET /redirect", a.authed(a.redirect))
	return a
}

// ServeHTTP serves the API: a scripted fault if one is due, else the rate
// limit, else the endpoint.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	a.mu.Lock()
	a.paths[r.URL.Path]++
	a.mu.Unlock()
	if f, ok := a.faultFor(r); ok {
		a.serveFault(w, r, f, http.HandlerFunc(a.serve))
		return
	}
	a.serve(w, r)
}

func (a *API) serve(w http.ResponseWriter, r *http.Request) {
	if a.cfg.rateLimit > 0 && !unmetered(r.URL.Path) && !a.admitRate(w) {
		return
	}
	a.mux.ServeHTTP(w, r)
}

// unmetered reports whether path is outside the rate limit.
func unmetered(path string) bool {
	return strings.HasPrefix(path, "/auth/") || path == "/oauth/token" || path == "/healthz" || path == "/stats"
}

// Stats returns the counts so far.
func (a *API) Stats() Stats {
	a.mu.Lock()
	paths := maps.Clone(a.paths)
	a.mu.Unlock()
	return Stats{
		Requests: a.requests.Load(), Paths: paths, Logins: a.logins.Load(),
		Refreshes: a.refreshes.Load(), RefreshReuse: a.reuse.Load(), RefreshRefused: a.refused.Load(),
		Unauthorized: a.unauthorized.Load(), Faults: a.faults.Load(), Flaky: a.flaky.Load(),
		Resets: a.resets.Load(), RateLimited: a.rateLimited.Load(), NotModified: a.notModified.Load(),
		Creates: a.creates.Load(), Uploads: a.uploads.Load(), ClientGrants: a.clientGrants.Load(),
	}
}

// Tokens is what the token endpoints answer (RFC 6749 section 5.1).
type Tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// Tokens returns the tokens of the session NewAPI started: what a client
// starts with. They are the same at every call; once a client has
// refreshed, its refresh token is spent, and presenting it again revokes
// the session.
func (a *API) Tokens() Tokens { return a.initial }

// Auth returns an [engine.Auth] for the session NewAPI started: its
// tokens, the access token's expiry when it has one ([WithTokenTTL]), and
// the JSON refresh endpoint, POST /auth/refresh. Set the other fields
// (hooks, a store) on the value it returns.
func (a *API) Auth() engine.Auth {
	return engine.Auth{
		AccessToken: a.initial.AccessToken, RefreshToken: a.initial.RefreshToken, Expiry: a.expiry,
		Refresh: &engine.RefreshConfig{Path: "/auth/refresh"},
	}
}

// Login starts a new session without HTTP and returns its tokens.
func (a *API) Login() Tokens {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.logins.Add(1)
	return a.startSession()
}

// startSession makes a session and its first token pair; a.mu must be
// held.
func (a *API) startSession() Tokens {
	a.nextSess++
	a.sessions[a.nextSess] = &session{}
	return a.issue(a.nextSess)
}

// Revoke ends every session: all tokens stop working, as after a password
// change. Refreshes are refused from then on.
func (a *API) Revoke() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.sessions {
		s.revoked = true
	}
}

// ExpireTokens makes every access token issued so far expire at once:
// the next request with any of them gets a 401. Refresh tokens keep
// working, so a client refreshes and goes on.
func (a *API) ExpireTokens() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, at := range a.access {
		at.expired = true
	}
}

type apiError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		fmt.Fprintln(w)
	}
}
