package engine

import (
	"context"
	"fmt"
	"net/http"
	"slices"
)

// Redirects: which headers a redirect may carry, and where the refresh call
// may go.

// DefaultSensitiveHeaders are the headers, besides Authorization,
// Proxy-Authorization, Cookie and the token's own header, that are stripped
// on a redirect to another origin when Config.SensitiveHeaders is nil: the
// usual names of API keys.
var DefaultSensitiveHeaders = []string{"X-Api-Key", "Api-Key", "X-Auth-Token"}

// maxRedirects is how many redirects one attempt follows, as net/http does.
const maxRedirects = 10

// redirectError is why the engine stopped following redirects: too many of
// them, or a refresh redirected to another origin. Neither is retried: the
// answer would be the same.
type redirectError struct{ reason string }

func (e *redirectError) Error() string { return e.reason }

// sensitiveKey is the context key of a request's own sensitive header names.
type sensitiveKey struct{}

// withSensitive returns ctx carrying names, the request's own sensitive
// headers, for the redirect guard.
func withSensitive(ctx context.Context, names []string) context.Context {
	if len(names) == 0 {
		return ctx
	}
	return context.WithValue(ctx, sensitiveKey{}, names)
}

// sensitiveHeaders returns the canonical names of the headers stripped on a
// redirect to another origin, whatever the request.
func (s *settings) sensitiveHeaders() []string {
	names := []string{"Authorization", "Proxy-Authorization", "Cookie"}
	if s.authHeader != "Authorization" {
		names = append(names, s.authHeader)
	}
	extra := s.SensitiveHeaders
	if extra == nil {
		extra = DefaultSensitiveHeaders
	}
	for _, k := range extra {
		names = append(names, http.CanonicalHeaderKey(k))
	}
	return names
}

// crossedOrigin reports whether the redirect chain via, ending at req, has
// left the origin of its first request at any hop. Once it has, it stays
// crossed: a redirect back does not earn the credentials back.
func crossedOrigin(req *http.Request, via []*http.Request) bool {
	first := origin(via[0].URL)
	if origin(req.URL) != first {
		return true
	}
	for _, v := range via[1:] {
		if origin(v.URL) != first {
			return true
		}
	}
	return false
}

// guardRedirect returns the CheckRedirect of the engine's client: on a
// redirect that leaves the first request's origin, the sensitive headers
// and the request's own sensitive headers are stripped, and the token
// never goes to any origin but the base URL's. next, the caller's own
// CheckRedirect, then decides; without one, a chain of more than
// maxRedirects fails with a *redirectError.
func (s *settings) guardRedirect(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	sensitive := s.sensitive
	return func(req *http.Request, via []*http.Request) error {
		if req.Context().Value(noFollow{}) != nil {
			return http.ErrUseLastResponse // the client above follows it
		}
		if crossedOrigin(req, via) {
			for _, k := range sensitive {
				req.Header.Del(k)
			}
			if own, ok := req.Context().Value(sensitiveKey{}).([]string); ok {
				for _, k := range own {
					req.Header.Del(k)
				}
			}
		}
		if origin(req.URL) != s.origin {
			req.Header.Del(s.authHeader)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxRedirects {
			return &redirectError{fmt.Sprintf("stopped after %d redirects", len(via))}
		}
		return nil
	}
}

// refreshClient returns the client for refresh calls: base's transport and
// settings, but redirects only within the refresh endpoint's origin. A
// redirect anywhere else fails the refresh before anything is sent there,
// so the refresh token and client credentials never leave that origin.
func refreshClient(base *http.Client) *http.Client {
	c := *base
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if origin(req.URL) != origin(via[0].URL) {
			return &redirectError{fmt.Sprintf("refresh endpoint redirected to another origin (%s)", origin(req.URL))}
		}
		if len(via) >= maxRedirects {
			return &redirectError{fmt.Sprintf("stopped after %d redirects", len(via))}
		}
		return nil
	}
	return &c
}

// hopHeader returns r's header for the engine to send: r's own, which the
// engine only reads (every attempt copies it), unless r is a hop of
// redirects that a client above the engine's RoundTripper follows
// (r.Response is the redirect that made it) and the chain has left its
// first request's origin. Then it is a copy without the sensitive headers:
// whatever that client's redirect policy, credentials stay on their origin.
func (s *settings) hopHeader(r *http.Request) http.Header {
	if r.Response == nil || r.Response.Request == nil {
		return r.Header
	}
	h := r.Header.Clone()
	var origins []string // of every hop, the latest first
	for hop := r; hop != nil && hop.URL != nil; {
		origins = append(origins, origin(hop.URL))
		if hop.Response == nil {
			break
		}
		hop = hop.Response.Request
	}
	first := origins[len(origins)-1]
	crossed := slices.ContainsFunc(origins, func(o string) bool { return o != first })
	if crossed {
		for _, k := range s.sensitive {
			h.Del(k)
		}
	}
	return h
}
