package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/courier-go/courier/requests"
)

// The engine's private HTTP cache (RFC 9111), in three hooks on the
// request path, each called from one place:
//
//	fromCache     Submit, after prepare: a fresh entry resolves the
//	              future with nothing sent; a stale one is kept on the
//	              call for the attempt to revalidate.
//	conditional   newHTTPRequest: If-None-Match / If-Modified-Since from
//	              the stale entry's validators.
//	cacheAnswer   attempt, once the body is read: a 304 is merged into the
//	              stored answer, a storable answer is stored, an unsafe
//	              method's success invalidates the URL's entry.
//
// Dedup works unchanged on top: identical GETs in flight share one call,
// so a stale entry is revalidated with one conditional request for all.
//
// Freshness is computed here rather than with github.com/pquerna/
// cachecontrol, which implements RFC 7234 for a shared cache: it refuses to
// store answers to requests with Authorization even when asked for a
// private cache, ignores the Age header when it computes an expiry, reads
// time.Now instead of the engine's clock, and adds a heuristic lifetime to
// answers that carry only Last-Modified, which an API client should
// revalidate instead.

// Cache stores answers for the engine's private HTTP cache (see
// [Config.Cache]). Keys are opaque hex digests, which the engine derives
// from the request's method, absolute URL (query sorted) and the
// credentials the caller set itself; they never hold a URL or a secret.
// An implementation must be safe for concurrent use: Get runs in the
// submitter's goroutine, Set and Delete in workers'. The engine never
// changes a CachedResponse it passes to Set or gets from Get.
//
// An error from any method is logged and the request goes on as if the
// cache had no entry: a cache never fails a request.
type Cache interface {
	// Get returns the entry stored under key, or nil and no error when
	// there is none.
	Get(ctx context.Context, key string) (*CachedResponse, error)
	// Set stores r under key, replacing any entry.
	Set(ctx context.Context, key string, r *CachedResponse) error
	// Delete removes the entry under key, if any.
	Delete(ctx context.Context, key string) error
}

// CachedResponse is one answer kept by a [Cache]: what the server sent,
// and what the engine needs to judge its freshness. It is a plain value;
// a stored one is never changed, so any number of goroutines may read it.
type CachedResponse struct {
	Status int
	Header http.Header
	Body   []byte `json:",omitempty"`
	// Vary holds the request's values of the headers the answer's Vary
	// names; a request with other values does not match the entry.
	Vary http.Header `json:",omitempty"`
	// Stored is when the answer, or its latest revalidation, arrived.
	Stored time.Time
	// Age is how old the answer already was when it arrived (RFC 9111
	// section 4.2.3: its Age header, or the time since its Date, plus the
	// time it spent in flight).
	Age time.Duration
	// Lifetime is how long after its origination it stays fresh: its
	// max-age, or Expires minus Date; 0 when it must be revalidated before
	// each use (no explicit freshness, or Cache-Control: no-cache).
	Lifetime time.Duration
}

// Size is the number of bytes e takes in a cache, about.
func (e *CachedResponse) Size() int64 {
	n := int64(len(e.Body)) + 128
	for k, vs := range e.Header {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	for k, vs := range e.Vary {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// fresh reports whether e may be served at now without asking the server.
func (e *CachedResponse) fresh(now time.Time, reqCC cacheControl) bool {
	age := e.Age + max(now.Sub(e.Stored), 0)
	if v, ok := reqCC["max-age"]; ok {
		if d, ok := seconds(v); !ok || age > d {
			return false
		}
	}
	return age < e.Lifetime
}

// response is e served as the answer to req.
func (e *CachedResponse) response(req *requests.Request, status requests.CacheStatus) *requests.Response {
	return &requests.Response{Status: e.Status, Header: e.Header.Clone(), Body: e.Body, Request: req, Cache: status}
}

// cacheLookup is what fromCache learnt for a call: the key and the stale
// entry to revalidate. Read-only once the call is admitted.
type cacheLookup struct {
	key        string
	entry      *CachedResponse // nil: none matching, a plain request
	noStore    bool            // the request said no-store
	invalidate bool            // an unsafe method: its success drops key
}

// DefaultCacheBytes bounds a memory or file cache made with a size of 0.
const DefaultCacheBytes = 64 << 20

// fromCache resolves f from the cache when a fresh entry matches its
// request, and reports whether it did; otherwise it notes on f's call
// what the attempt needs (see cacheLookup).
func (e *Engine) fromCache(f *Future) bool {
	cache := e.s.Cache
	c := &f.w.own
	if cache == nil || c.stream != nil || c.req.Output != nil {
		return false
	}
	if _, digestible := c.req.Body.(requests.Digester); c.req.Body != nil && !digestible {
		return false
	}
	switch m := c.req.MethodOrGet(); m {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		// RFC 9111 section 4.4: a successful unsafe request invalidates
		// what is stored for its URL.
		get := *c.req
		get.Method, get.Body, get.IdempotencyKey = http.MethodGet, nil, ""
		c.cached = &cacheLookup{key: cacheKey(e.requestKey(withoutCacheControl(&get), &c.url)), invalidate: true}
		return false
	default:
		return false
	}
	if conditionalHeaders(c.req.Header) {
		return false // the caller revalidates itself, and wants the 304
	}
	lk := &cacheLookup{key: cacheKey(e.requestKey(withoutCacheControl(c.req), &c.url))}
	c.cached = lk
	reqCC := parseCacheControl(c.req.Header)
	_, lk.noStore = reqCC["no-store"]
	entry, err := cache.Get(f.ctx, lk.key)
	if err != nil {
		e.log.Warn().Str("method", c.req.MethodOrGet()).Str("path", c.url.Path).AnErr("error", redactErr(err)).Msg("cache get")
		return false
	}
	if entry == nil || !e.varyMatches(entry, c.req) {
		return false
	}
	lk.entry = entry
	if _, noCache := reqCC["no-cache"]; noCache || !entry.fresh(e.s.Clock.Now(), reqCC) {
		return false
	}
	resp := entry.response(c.req, requests.CacheHit)
	if c.req.MethodOrGet() == http.MethodHead {
		resp.Body = nil
	}
	e.stats.cacheHits.Add(1)
	e.stats.cacheBytes.Add(int64(len(resp.Body)))
	e.settle(f, resp, nil)
	return true
}

// conditional adds to h, an attempt's headers, the validators of the
// stale entry the call revalidates, unless the caller set its own.
func (e *Engine) conditional(h http.Header, c *call) {
	lk := c.cached
	if lk == nil || lk.entry == nil {
		return
	}
	if etag := lk.entry.Header.Get("Etag"); etag != "" && h.Get("If-None-Match") == "" {
		h["If-None-Match"] = []string{etag}
	}
	if lm := lk.entry.Header.Get("Last-Modified"); lm != "" && h.Get("If-Modified-Since") == "" {
		h["If-Modified-Since"] = []string{lm}
	}
}

// cacheAnswer reads an attempt's answer, sent at sent, through the cache:
// a 304 to a revalidation becomes the stored answer with the 304's
// headers (and is stored so), a storable answer is stored, and an unsafe
// request's success drops its URL's entry. It returns the answer to
// deliver.
func (e *Engine) cacheAnswer(ctx context.Context, c *call, resp *requests.Response, sent time.Time) *requests.Response {
	lk := c.cached
	if lk == nil {
		return resp
	}
	cache := e.s.Cache
	if lk.invalidate {
		if resp.Status < 400 {
			e.cacheDo(c, "cache delete", cache.Delete(ctx, lk.key))
		}
		return resp
	}
	now := e.s.Clock.Now()
	if resp.Status == http.StatusNotModified && lk.entry != nil {
		entry := lk.entry.revalidated(resp.Header, sent, now)
		if !lk.noStore {
			e.cacheDo(c, "cache set", cache.Set(ctx, lk.key, entry))
		}
		out := entry.response(resp.Request, requests.CacheRevalidated)
		out.Attempts = resp.Attempts
		if c.req.MethodOrGet() == http.MethodHead {
			out.Body = nil
		}
		e.stats.cacheRevalidations.Add(1)
		e.stats.cacheBytes.Add(int64(len(out.Body)))
		return out
	}
	resp.Cache = requests.CacheMiss
	if lk.noStore {
		return resp
	}
	if entry := e.storable(c.req, resp, sent, now); entry != nil {
		e.cacheDo(c, "cache set", cache.Set(ctx, lk.key, entry))
	}
	return resp
}

// cacheDo logs a cache's failure, which never fails the request.
func (e *Engine) cacheDo(c *call, what string, err error) {
	if err != nil {
		e.log.Warn().Str("method", c.req.MethodOrGet()).Str("path", c.url.Path).AnErr("error", redactErr(err)).Msg(what)
	}
}

// storable returns the entry to store for resp, an answer to req sent at
// sent and arrived at now, or nil when it may not be stored: RFC 9111
// section 3 for a private cache, keeping only answers that can be reused
// (a validator or explicit freshness).
func (e *Engine) storable(req *requests.Request, resp *requests.Response, sent, now time.Time) *CachedResponse {
	switch resp.Status {
	case http.StatusOK, http.StatusNonAuthoritativeInfo, http.StatusNoContent:
	default:
		return nil
	}
	cc := parseCacheControl(resp.Header)
	if _, ok := cc["no-store"]; ok {
		return nil
	}
	vary := varyNames(resp.Header)
	if slices.Contains(vary, "*") {
		return nil // matches no later request
	}
	lifetime, explicit := freshness(resp.Header, cc)
	validator := resp.Header.Get("Etag") != "" || resp.Header.Get("Last-Modified") != ""
	if !explicit && !validator {
		return nil
	}
	if _, ok := cc["no-cache"]; ok {
		lifetime = 0
	}
	entry := &CachedResponse{
		Status: resp.Status, Header: resp.Header.Clone(), Body: resp.Body,
		Stored: now, Age: initialAge(resp.Header, sent, now), Lifetime: lifetime,
	}
	if len(vary) > 0 {
		entry.Vary = http.Header{}
		for _, name := range vary {
			entry.Vary[name] = []string{e.varyValue(req, name)}
		}
	}
	return entry
}

// revalidated is e updated by a 304 that arrived at now: the 304's
// headers replace the stored ones (RFC 9111 section 4.3.4), and its
// freshness starts again.
func (e *CachedResponse) revalidated(h http.Header, sent, now time.Time) *CachedResponse {
	n := *e
	n.Header = e.Header.Clone()
	for k, vs := range h {
		switch k {
		case "Content-Length", "Content-Encoding", "Transfer-Encoding", "Content-Range", "Connection", "Keep-Alive", "Trailer", "Upgrade":
			continue
		}
		n.Header[k] = slices.Clone(vs)
	}
	cc := parseCacheControl(n.Header)
	n.Lifetime, _ = freshness(n.Header, cc)
	if _, ok := cc["no-cache"]; ok {
		n.Lifetime = 0
	}
	n.Stored, n.Age = now, initialAge(h, sent, now)
	return &n
}

// varyNames returns the canonical header names resp's Vary lists.
func varyNames(h http.Header) []string {
	var names []string
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				names = append(names, http.CanonicalHeaderKey(f))
			}
		}
	}
	return names
}

// varyValue is what req sends in header name: its own value, or the
// engine's configured one. The engine's token is never part of it, so a
// token refresh does not change what an entry matches.
func (e *Engine) varyValue(req *requests.Request, name string) string {
	for k, vs := range req.Header {
		if http.CanonicalHeaderKey(k) == name {
			return strings.Join(vs, ", ")
		}
	}
	for k, vs := range e.s.Headers {
		if http.CanonicalHeaderKey(k) == name {
			return strings.Join(vs, ", ")
		}
	}
	return ""
}

// varyMatches reports whether req selects entry: the same values for
// every header its answer's Vary named.
func (e *Engine) varyMatches(entry *CachedResponse, req *requests.Request) bool {
	for name, vs := range entry.Vary {
		if len(vs) != 1 || e.varyValue(req, name) != vs[0] {
			return false
		}
	}
	return true
}

// cacheKey turns a request key (see requestKey) into a cache key: a
// digest, so that no URL, query or credential reaches a cache's storage.
func cacheKey(requestKey string) string {
	sum := sha256.Sum256([]byte(requestKey))
	return hex.EncodeToString(sum[:])
}

// cacheControl holds Cache-Control directives, names in lower case, each
// with its value ("" when it has none).
type cacheControl map[string]string

// parseCacheControl reads every Cache-Control field of h (RFC 9111
// section 5.2): comma-separated directives, each a token with an optional
// token or quoted-string value. The first of a repeated directive wins.
func parseCacheControl(h http.Header) cacheControl {
	cc := cacheControl{}
	for _, field := range h.Values("Cache-Control") {
		for field != "" {
			var d string
			d, field = nextDirective(field)
			name, value, _ := strings.Cut(d, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			value = strings.TrimSpace(value)
			if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			if _, dup := cc[name]; !dup {
				cc[name] = value
			}
		}
	}
	return cc
}

// nextDirective splits s at its first comma outside a quoted string.
func nextDirective(s string) (directive, rest string) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				return s[:i], s[i+1:]
			}
		}
	}
	return s, ""
}

// seconds parses a delta-seconds value; a value too large for a
// time.Duration is capped (RFC 9111 section 1.2.2).
func seconds(v string) (time.Duration, bool) {
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n > 1<<31 {
		n = 1 << 31
	}
	return time.Duration(n) * time.Second, true
}

// freshness returns an answer's freshness lifetime and whether the
// answer gave one explicitly (RFC 9111 section 4.2.1, for a private
// cache: s-maxage is for shared caches). An invalid max-age or Expires
// counts as given and already stale; no lifetime is guessed from
// Last-Modified.
func freshness(h http.Header, cc cacheControl) (time.Duration, bool) {
	if v, ok := cc["max-age"]; ok {
		d, _ := seconds(v)
		return d, true
	}
	exp := h.Get("Expires")
	if exp == "" {
		return 0, false
	}
	t, err := http.ParseTime(exp)
	if err != nil {
		return 0, true // "Expires: 0" and the like: stale
	}
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return 0, true // no Date to measure from: revalidate
	}
	return max(t.Sub(date), 0), true
}

// initialAge is how old an answer sent at sent and arrived at now already
// was (RFC 9111 section 4.2.3): the larger of its Age header and the time
// since its Date, plus the time it spent in flight.
func initialAge(h http.Header, sent, now time.Time) time.Duration {
	delay := max(now.Sub(sent), 0)
	age := delay
	if v, ok := seconds(h.Get("Age")); ok {
		age = v + delay
	}
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		age = max(age, now.Sub(date))
	}
	return max(age, 0)
}

// callerAuth reports whether req sets the token's header itself: its
// value then replaces the engine's token for that request, and keys the
// request's dedup and cache entries as any credential of the caller's.
func callerAuth(req *requests.Request, authHeader string) bool {
	for k := range req.Header {
		if http.CanonicalHeaderKey(k) == authHeader {
			return true
		}
	}
	return false
}

// cacheMagic starts an encoded CachedResponse (see MarshalBinary).
const cacheMagic = "courier-cache 1\n"

// MarshalBinary encodes r for a cache's storage: a version line, r's
// fields but the body as one line of JSON, then the body as it is.
func (r *CachedResponse) MarshalBinary() ([]byte, error) {
	type meta CachedResponse // without the methods
	m := meta(*r)
	m.Body = nil
	j, err := json.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("cache entry: %w", err)
	}
	b := make([]byte, 0, len(cacheMagic)+len(j)+1+len(r.Body))
	b = append(b, cacheMagic...)
	b = append(b, j...)
	b = append(b, '\n')
	return append(b, r.Body...), nil
}

// UnmarshalBinary decodes what MarshalBinary encoded into r.
func (r *CachedResponse) UnmarshalBinary(b []byte) error {
	rest, ok := bytes.CutPrefix(b, []byte(cacheMagic))
	if !ok {
		return fmt.Errorf("cache entry: not an entry of this version")
	}
	j, body, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok {
		return fmt.Errorf("cache entry: truncated")
	}
	type meta CachedResponse
	var m meta
	if err := json.Unmarshal(j, &m); err != nil {
		return fmt.Errorf("cache entry: %w", err)
	}
	m.Body = body
	if len(body) == 0 {
		m.Body = nil
	}
	*r = CachedResponse(m)
	return nil
}

// conditionalHeaders reports whether h makes a request conditional.
func conditionalHeaders(h http.Header) bool {
	for k := range h {
		switch http.CanonicalHeaderKey(k) {
		case "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range":
			return true
		}
	}
	return false
}

// withoutCacheControl is req without the headers that speak to caches
// (Cache-Control, Pragma): they say how to use an entry, not which one.
func withoutCacheControl(req *requests.Request) *requests.Request {
	drop := func(k string) bool {
		k = http.CanonicalHeaderKey(k)
		return k == "Cache-Control" || k == "Pragma"
	}
	found := false
	for k := range req.Header {
		found = found || drop(k)
	}
	if !found {
		return req
	}
	cp := *req
	cp.Header = http.Header{}
	for k, vs := range req.Header {
		if !drop(k) {
			cp.Header[k] = vs
		}
	}
	return &cp
}
