package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// What Submit works out in the caller's goroutine before the dispatcher
// sees a request: its absolute URL, whether it may carry the token, and the
// key under which the dispatcher merges it with identical requests.

// errNilContext fails a call made with a nil context: a caller's mistake
// that the standard library would answer with a panic.
var errNilContext = errors.New("courier: nil Context")

// prepare checks req and builds its future; ok is false when the future
// has already failed.
func (e *Engine) prepare(ctx context.Context, req *requests.Request) (f *Future, ok bool) {
	f = newFuture(ctx, req)
	return f, e.prepareIn(f, nil)
}

// prepareIn checks f's request and fills in the call f starts; it reports
// false when f has failed already. abs, when not nil, is the request's
// absolute URL parsed already (RoundTrip's): it is used as it is.
func (e *Engine) prepareIn(f *Future, abs *url.URL) bool {
	ctx, req := f.ctx, f.req
	e.stats.submitted.Add(1)
	if ctx == nil {
		e.settle(f, nil, errNilContext)
		return false
	}
	if err := req.Err(); err != nil {
		e.settle(f, nil, err)
		return false
	}
	if err := checkHeaders(req.Header); err != nil {
		e.settle(f, nil, fmt.Errorf("courier: %s %s: %w", req.MethodOrGet(), redactRef(req.Path), err))
		return false
	}
	var u url.URL
	var err error
	if abs != nil && abs.IsAbs() && (abs.Scheme == "http" || abs.Scheme == "https") && len(req.Query) == 0 {
		u = *abs
	} else if u, err = e.resolve(req); err != nil {
		e.settle(f, nil, err)
		return false
	}
	c := &f.w.own
	c.req = req
	c.url = u
	c.sameOrigin = e.sameOrigin(&c.url)
	c.key = e.dedupKey(req, &c.url)
	e.tel.startRequest(f)
	if err := ctx.Err(); err != nil {
		e.settle(f, nil, err)
		return false
	}
	return true
}

// resolve returns the request's absolute URL with its query merged.
func (e *Engine) resolve(req *requests.Request) (url.URL, error) {
	if p := req.Path; e.s.base.RawPath == "" && e.s.base.RawQuery == "" && len(p) > 0 && p[0] == '/' && plainPath(p) {
		// The common case, a clean path: no parse, no cleaning.
		u := *e.s.base
		u.Path = strings.TrimSuffix(u.Path, "/") + p
		u.RawQuery = ""
		if len(req.Query) > 0 {
			u.RawQuery = req.Query.Encode()
		}
		return u, nil
	}
	ref, err := url.Parse(req.Path)
	if err != nil {
		return url.URL{}, fmt.Errorf("courier: %s %q: invalid path: %w", req.MethodOrGet(), redactRef(req.Path), redactErr(err))
	}
	if !ref.IsAbs() && (ref.Host != "" || ref.User != nil) {
		// "//host/x" names another host without a scheme; resolving it
		// against the base URL would silently drop the host.
		return url.URL{}, fmt.Errorf("courier: %s %q: path starts with // (a host without a scheme); use a full URL or one /", req.MethodOrGet(), redactRef(req.Path))
	}
	var u *url.URL
	switch p := ref.Path; {
	case ref.IsAbs():
		u = ref
	case ref.RawPath == "" && e.s.base.RawPath == "" && !strings.Contains(p, "/.") && !strings.Contains(p, "//") && !strings.HasPrefix(p, "."):
		// The common case, without JoinPath's cleaning and its allocations.
		cp := *e.s.base
		cp.Path = strings.TrimSuffix(cp.Path, "/") + "/" + strings.TrimPrefix(p, "/")
		cp.RawQuery = ref.RawQuery
		u = &cp
	default:
		// Paths, even those starting with "/", live under the base URL's
		// path: base https://h/api/v1 and path /users give /api/v1/users.
		u = e.s.base.JoinPath(ref.EscapedPath())
		u.RawQuery = ref.RawQuery
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return url.URL{}, fmt.Errorf("courier: %s %q: scheme must be http or https", req.MethodOrGet(), redactRef(req.Path))
	}
	if len(req.Query) > 0 {
		q := u.Query()
		for k, vs := range req.Query {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	if !ref.IsAbs() && e.s.base.RawQuery != "" {
		u.RawQuery = withBaseQuery(e.s.base.Query(), u.RawQuery)
	}
	return *u, nil
}

// withBaseQuery merges a relative request's query over the base URL's:
// every base parameter is kept, except those the request sets itself,
// whose values are the request's.
func withBaseQuery(base url.Values, own string) string {
	q, _ := url.ParseQuery(own)
	for k, vs := range q {
		base[k] = vs
	}
	return base.Encode()
}

// dedupKey returns the key under which req merges with identical in-flight
// requests, or "" when it must go on its own. The key covers the method,
// the URL with its query sorted, the body's digest and the request's own
// headers; never the token.
func (e *Engine) dedupKey(req *requests.Request, u *url.URL) string {
	if e.s.Dedup.Disabled || req.NoDedup || req.Output != nil {
		return ""
	}
	if _, digestible := req.Body.(requests.Digester); req.Body != nil && !digestible {
		return "" // a streamed body (an upload) is never shared
	}
	if req.DedupKey != "" {
		return "key\x00" + req.DedupKey
	}
	m := req.MethodOrGet()
	if m != http.MethodGet && m != http.MethodHead {
		return ""
	}
	return e.requestKey(req, u)
}

// requestKey names what req asks for: its method, the URL with its query
// sorted, the body's digest and the request's own headers; never the
// token. Dedup merges, and the cache keys entries, by it.
func (e *Engine) requestKey(req *requests.Request, u *url.URL) string {
	m := req.MethodOrGet()
	if req.Body == nil && len(req.Header) == 0 && !req.NoAuth && req.IdempotencyKey == "" && !strings.Contains(u.RawQuery, "&") {
		if u.User == nil && u.Opaque == "" && u.RawPath == "" && u.Fragment == "" && !u.ForceQuery && u.Host != "" &&
			(u.Path == "" || u.Path[0] == '/') {
			// The common case, in one allocation: what u.String() would
			// give, without building it first.
			if u.RawQuery == "" {
				return m + "\x00" + u.Scheme + "://" + u.Host + u.EscapedPath()
			}
			return m + "\x00" + u.Scheme + "://" + u.Host + u.EscapedPath() + "?" + u.RawQuery
		}
		return m + "\x00" + u.String()
	}
	urlStr := u.String()
	var b strings.Builder
	b.WriteString(m)
	b.WriteByte(0)
	if strings.Contains(u.RawQuery, "&") {
		cp := *u
		cp.RawQuery = cp.Query().Encode() // sorted, so order does not matter
		b.WriteString(cp.String())
	} else {
		b.WriteString(urlStr)
	}
	if req.NoAuth {
		b.WriteString("\x00noauth")
	}
	if dg, ok := req.Body.(requests.Digester); ok {
		sum := sha256.Sum256(dg.Bytes())
		b.WriteString(hex.EncodeToString(sum[:]))
	}
	// Every header the caller set is part of the key, credentials above all
	// (Authorization, Cookie, an API key): requests of different callers
	// must never share an answer. Only the engine's own token, which is not
	// in req.Header, is left out. Credentials go in as digests, so the key
	// holds no secret.
	keys := make([]string, 0, len(req.Header))
	for k := range req.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ck := http.CanonicalHeaderKey(k)
		v := strings.Join(req.Header[k], "\x00")
		b.WriteByte(0)
		b.WriteString(ck)
		b.WriteByte(':')
		if e.sensitive(ck, req) {
			sum := sha256.Sum256([]byte(v))
			b.WriteString(hex.EncodeToString(sum[:]))
		} else {
			b.WriteString(v)
		}
	}
	if req.IdempotencyKey != "" {
		b.WriteString("\x00idem:" + req.IdempotencyKey)
	}
	return b.String()
}

// plainPath reports whether p needs no parsing: no query, fragment,
// escapes, dot segments or doubled slashes.
func plainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '?' || c == '#' || c == '%' || c <= ' ' || c >= 0x7f:
			return false
		case c == '/' && i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.'):
			return false
		}
	}
	return true
}

// sameOrigin reports whether u may receive the token.
func (e *Engine) sameOrigin(u *url.URL) bool {
	if u.Scheme == e.s.base.Scheme && u.Host == e.s.base.Host {
		return true
	}
	return origin(u) == e.s.origin
}

// sensitive reports whether the canonical header name k carries a
// credential for req: one of the engine's sensitive headers, or one req
// marks itself.
func (e *Engine) sensitive(k string, req *requests.Request) bool {
	return slices.Contains(e.s.sensitive, k) || slices.ContainsFunc(req.SensitiveHeaders, func(n string) bool {
		return http.CanonicalHeaderKey(n) == k
	})
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

func origin(u *url.URL) string {
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + host + ":" + port
}
