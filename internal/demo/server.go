package demo

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes the demo API. The zero value gives tokens that never expire
// and endpoints that never flake.
type Config struct {
	// AccessUses is how many requests an access token serves before it
	// expires; 0 means no limit.
	AccessUses int
	// AccessTTL is an access token's lifetime, announced as expires_in; 0
	// means no limit.
	AccessTTL time.Duration
	// Username and Password accepted by /auth/login; if empty, "demo".
	Username, Password string
	// FlakyPercent is the share of ids (0-100) whose first /flaky attempt
	// fails.
	FlakyPercent int
	// Now is the server's clock; if nil, time.Now.
	Now func() time.Time
	// ClientID and ClientSecret are the OAuth 2.0 client /oauth/token
	// accepts, as HTTP Basic auth or form fields; if empty, "demo-client"
	// and "demo-secret".
	ClientID, ClientSecret string
	// HoldRefresh, if set, is called after a refresh has rotated its token
	// and before the answer is written: the old refresh token is already
	// spent. It may block to hold the answer back.
	HoldRefresh func()
	// RefreshAnswered, if set, is called after a refresh's answer has been
	// written and flushed.
	RefreshAnswered func()
}

// Stats counts what the server saw. Read it with [Server.Stats].
type Stats struct {
	Requests     int64 `json:"requests"`
	Logins       int64 `json:"logins"`
	Refreshes    int64 `json:"refreshes"`
	RefreshReuse int64 `json:"refresh_reuse"`
	Unauthorized int64 `json:"unauthorized"`
	Flaky        int64 `json:"flaky"`
	Resets       int64 `json:"resets"`
	Creates      int64 `json:"creates"`
	Uploads      int64 `json:"uploads"`
	ClientGrants int64 `json:"client_grants"` // client-credentials tokens issued
}

// Server is the demo API; it is an [http.Handler]. Server is safe for
// concurrent use.
type Server struct {
	cfg Config
	mux *http.ServeMux

	mu       sync.Mutex // protects the maps below
	access   map[string]*accessToken
	refresh  map[string]*refreshToken
	sessions map[int]*session
	attempts map[string]int    // per flaky/reset path: attempts seen
	created  map[string][]byte // Idempotency-Key -> answer
	nextSess int

	requests, logins, refreshes, reuse, unauthorized, flaky, resets, creates, uploads, clientGrants atomic.Int64
}

type session struct{ revoked bool }

type accessToken struct {
	session  int
	expires  time.Time // zero: none
	usesLeft int       // -1: unlimited
}

type refreshToken struct {
	session int
	used    bool
}

// New returns a demo API configured by cfg.
func New(cfg Config) *Server {
	if cfg.Username == "" {
		cfg.Username = "demo"
	}
	if cfg.Password == "" {
		cfg.Password = "demo"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "demo-client"
	}
	if cfg.ClientSecret == "" {
		cfg.ClientSecret = "demo-secret"
	}
	s := &Server{
		cfg: cfg, mux: http.NewServeMux(),
		access: map[string]*accessToken{}, refresh: map[string]*refreshToken{},
		sessions: map[int]*session{}, attempts: map[string]int{}, created: map[string][]byte{},
	}
	s.mux.HandleFunc("POST /auth/login", s.login)
	s.mux.HandleFunc("POST /auth/refresh", s.refreshTokens)
	s.mux.HandleFunc("POST /oauth/token", s.token)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]bool{"ok": true}) })
	s.mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, s.Stats()) })
	s.mux.Handle("GET /items/{id}", s.authed(s.item))
	s.mux.Handle("GET /items", s.authed(s.items))
	s.mux.Handle("POST /items", s.authed(s.create))
	s.mux.Handle("GET /flaky/{id}", s.authed(s.flakyItem))
	s.mux.Handle("GET /reset/{id}", s.authed(s.reset))
	s.mux.Handle("GET /slow/{id}", s.authed(s.slow))
	s.mux.Handle("POST /upload", s.authed(s.upload))
	s.mux.Handle("GET /redirect", s.authed(s.redirect))
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mux.ServeHTTP(w, r)
}

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	return Stats{
		Requests: s.requests.Load(), Logins: s.logins.Load(), Refreshes: s.refreshes.Load(),
		RefreshReuse: s.reuse.Load(), Unauthorized: s.unauthorized.Load(), Flaky: s.flaky.Load(),
		Resets: s.resets.Load(), Creates: s.creates.Load(), Uploads: s.uploads.Load(),
		ClientGrants: s.clientGrants.Load(),
	}
}

// Tokens is what /auth/login and /auth/refresh answer.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// Login starts a session without HTTP, for tests and examples.
func (s *Server) Login() Tokens {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logins.Add(1)
	s.nextSess++
	s.sessions[s.nextSess] = &session{}
	return s.issue(s.nextSess)
}

// issue makes a token pair for session; s.mu must be held.
func (s *Server) issue(sess int) Tokens {
	t := s.issueAccess(sess)
	t.RefreshToken = "rt_" + randomHex()
	s.refresh[t.RefreshToken] = &refreshToken{session: sess}
	return t
}

// issueAccess makes an access token alone for session; s.mu must be held.
func (s *Server) issueAccess(sess int) Tokens {
	at := &accessToken{session: sess, usesLeft: -1}
	if s.cfg.AccessUses > 0 {
		at.usesLeft = s.cfg.AccessUses
	}
	t := Tokens{AccessToken: "at_" + randomHex(), TokenType: "Bearer"}
	if s.cfg.AccessTTL > 0 {
		at.expires = s.cfg.Now().Add(s.cfg.AccessTTL)
		t.ExpiresIn = int(s.cfg.AccessTTL / time.Second)
	}
	s.access[t.AccessToken] = at
	return t
}

// Revoke ends every session: all tokens stop working, as after a password
// change.
func (s *Server) Revoke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		sess.revoked = true
	}
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var creds struct{ Username, Password string }
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&creds); err != nil {
			writeJSON(w, 400, apiError{"invalid_request", "body is not JSON"})
			return
		}
	} else {
		creds.Username, creds.Password = r.FormValue("username"), r.FormValue("password")
	}
	if creds.Username != s.cfg.Username || creds.Password != s.cfg.Password {
		writeJSON(w, 401, apiError{"invalid_credentials", "wrong username or password"})
		return
	}
	writeJSON(w, 200, s.Login())
}

func (s *Server) refreshTokens(w http.ResponseWriter, r *http.Request) {
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
	s.answerRefresh(w, rt)
}

// answerRefresh rotates refresh token rt and answers with the new tokens.
func (s *Server) answerRefresh(w http.ResponseWriter, rt string) {
	t, refusal := s.rotate(rt)
	if refusal != nil {
		writeJSON(w, 400, refusal)
		return
	}
	if s.cfg.HoldRefresh != nil {
		s.cfg.HoldRefresh()
	}
	writeJSON(w, 200, t)
	if s.cfg.RefreshAnswered != nil {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		s.cfg.RefreshAnswered()
	}
}

// rotate spends refresh token rt for a new pair, or says why not.
func (s *Server) rotate(rt string) (Tokens, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.refresh[rt]
	switch {
	case !ok:
		return Tokens{}, &apiError{"invalid_grant", "unknown refresh token"}
	case old.used:
		// Reuse of a rotated refresh token: someone else may hold it. End
		// the session, as RFC 6819 section 5.2.2.3 advises.
		s.reuse.Add(1)
		s.sessions[old.session].revoked = true
		return Tokens{}, &apiError{"invalid_grant", "refresh token reused; session revoked"}
	case s.sessions[old.session].revoked:
		return Tokens{}, &apiError{"invalid_grant", "session revoked"}
	}
	old.used = true
	s.refreshes.Add(1)
	return s.issue(old.session), nil
}

// token is an OAuth 2.0 token endpoint (RFC 6749 section 3.2) for a
// confidential client: the refresh_token grant and the client_credentials
// grant (section 4.4, an access token and no refresh token). The client
// authenticates with HTTP Basic or with client_id and client_secret form
// fields, not both.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
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
	if id != s.cfg.ClientID || secret != s.cfg.ClientSecret {
		w.Header().Set("WWW-Authenticate", `Basic realm="demo"`)
		writeJSON(w, 401, apiError{"invalid_client", "unknown client or wrong secret"})
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		s.mu.Lock()
		s.nextSess++
		s.sessions[s.nextSess] = &session{}
		t := s.issueAccess(s.nextSess)
		s.mu.Unlock()
		s.clientGrants.Add(1)
		if sc := r.PostForm.Get("scope"); sc != "" {
			t.Scope = sc
		}
		writeJSON(w, 200, t)
	case "refresh_token":
		s.answerRefresh(w, r.PostForm.Get("refresh_token"))
	default:
		writeJSON(w, 400, apiError{"unsupported_grant_type", "grant_type must be client_credentials or refresh_token"})
	}
}

type apiError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// authed checks the bearer token before h.
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.valid(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			s.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, 401, apiError{"invalid_token", "access token missing, expired or revoked"})
			return
		}
		h(w, r)
	})
}

func (s *Server) valid(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.access[token]
	if !ok || s.sessions[at.session].revoked {
		return false
	}
	if !at.expires.IsZero() && !s.cfg.Now().Before(at.expires) {
		return false
	}
	if at.usesLeft == 0 {
		return false
	}
	if at.usesLeft > 0 {
		at.usesLeft--
	}
	return true
}

// Item is what the item endpoints answer.
type Item struct {
	ID    string  `json:"id"`
	Name  string  `json:"name"`
	Price float64 `json:"price"`
}

func itemFor(id string) Item {
	h := fnv.New32a()
	h.Write([]byte(id))
	return Item{ID: id, Name: "item-" + id, Price: float64(h.Sum32()%10000) / 100}
}

func (s *Server) item(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, itemFor(r.PathValue("id")))
}

func (s *Server) items(w http.ResponseWriter, r *http.Request) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	page = max(page, 1)
	out := make([]Item, 0, 10)
	for i := range 10 {
		out = append(out, itemFor(strconv.Itoa((page-1)*10+i+1)))
	}
	writeJSON(w, 200, map[string]any{"page": page, "items": out})
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || !json.Valid(body) {
		writeJSON(w, 400, apiError{"invalid_request", "body must be JSON"})
		return
	}
	key := r.Header.Get("Idempotency-Key")
	s.mu.Lock()
	if prev, ok := s.created[key]; ok && key != "" {
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Idempotent-Replayed", "true")
		w.WriteHeader(201)
		w.Write(prev)
		return
	}
	n := s.creates.Add(1)
	answer, _ := json.Marshal(map[string]any{"id": n, "item": json.RawMessage(body)})
	if key != "" {
		s.created[key] = answer
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(201)
	w.Write(answer)
}

// firstAttempt reports whether this is the first time path is asked for.
func (s *Server) firstAttempt(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts[path]++
	return s.attempts[path] == 1
}

func (s *Server) flakyItem(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h := fnv.New32a()
	h.Write([]byte(id))
	v := h.Sum32()
	if int(v%100) < s.cfg.FlakyPercent && s.firstAttempt(r.URL.Path) {
		s.flaky.Add(1)
		switch v % 3 {
		case 0:
			w.Header().Set("Retry-After", "1")
			writeJSON(w, 503, apiError{"unavailable", "try again in a second"})
		case 1:
			w.Header().Set("Retry-After", s.cfg.Now().Add(time.Second).UTC().Format(http.TimeFormat))
			writeJSON(w, 503, apiError{"unavailable", "try again at the given date"})
		default:
			w.Header().Set("Retry-After", "1")
			writeJSON(w, 429, apiError{"rate_limited", "slow down"})
		}
		return
	}
	writeJSON(w, 200, itemFor(id))
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	if s.firstAttempt(r.URL.Path) {
		s.resets.Add(1)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // send RST, not FIN
			}
			conn.Close()
			return
		}
	}
	writeJSON(w, 200, itemFor(r.PathValue("id")))
}

func (s *Server) slow(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	ms = min(max(ms, 0), 10_000)
	body, _ := json.Marshal(itemFor(r.PathValue("id")))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	const pieces = 4
	step := (len(body) + pieces - 1) / pieces
	fl, _ := w.(http.Flusher)
	for i := 0; i < len(body); i += step {
		w.Write(body[i:min(i+step, len(body))])
		if fl != nil {
			fl.Flush()
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond / pieces):
		case <-r.Context().Done():
			return
		}
	}
}

// UploadedPart describes one part /upload received.
type UploadedPart struct {
	Field       string `json:"field"`
	Filename    string `json:"filename,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	Value       string `json:"value,omitempty"` // plain fields only
}

// UploadAnswer is what /upload answers.
type UploadAnswer struct {
	ContentLength int64          `json:"content_length"` // -1 when chunked
	Parts         []UploadedPart `json:"parts"`
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	mr, err := r.MultipartReader()
	if err != nil {
		writeJSON(w, 400, apiError{"invalid_request", err.Error()})
		return
	}
	ans := UploadAnswer{ContentLength: r.ContentLength, Parts: []UploadedPart{}}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeJSON(w, 400, apiError{"invalid_request", err.Error()})
			return
		}
		h := sha256.New()
		var value strings.Builder
		var dst io.Writer = h
		if p.FileName() == "" {
			dst = io.MultiWriter(h, &value)
		}
		n, err := io.Copy(dst, p)
		if err != nil {
			writeJSON(w, 400, apiError{"invalid_request", err.Error()})
			return
		}
		up := UploadedPart{Field: p.FormName(), Filename: p.FileName(), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
		if p.FileName() != "" {
			up.ContentType = p.Header.Get("Content-Type")
		} else {
			up.Value = value.String()
		}
		ans.Parts = append(ans.Parts, up)
	}
	s.uploads.Add(1)
	writeJSON(w, 200, ans)
}

func (s *Server) redirect(w http.ResponseWriter, r *http.Request) {
	to := r.URL.Query().Get("to")
	if to == "" {
		writeJSON(w, 400, apiError{"invalid_request", "to is required"})
		return
	}
	http.Redirect(w, r, to, http.StatusFound)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		fmt.Fprintln(w)
	}
}
