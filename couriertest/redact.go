package couriertest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/courier-go/courier/engine"
)

// Redacted is what Record writes in place of every credential: header
// values, query parameters, form and JSON fields. It is a valid bearer
// token, so a client replaying a recorded refresh goes on with it.
const Redacted = "REDACTED"

// RedactOption adds to what [Record] redacts; give [Replay] the same
// options, since what is redacted takes no part in matching.
type RedactOption func(*redactor)

// RedactHeaders redacts the values of the named headers too, beside
// Authorization, Proxy-Authorization, Cookie, Set-Cookie and
// engine.DefaultSensitiveHeaders.
func RedactHeaders(names ...string) RedactOption {
	return func(r *redactor) {
		for _, n := range names {
			r.headers[http.CanonicalHeaderKey(n)] = true
		}
	}
}

// RedactFields redacts the values of the named query parameters, form
// fields and JSON object members (at any depth) too, beside the default
// ones: access_token, refresh_token, id_token, token, client_secret,
// client_assertion, password, api_key, apikey and code_verifier. Names
// match without regard to case.
func RedactFields(names ...string) RedactOption {
	return func(r *redactor) {
		for _, n := range names {
			r.fields[strings.ToLower(n)] = true
		}
	}
}

// redactor decides what is written in place of secrets. Its sets are
// fixed once the options are applied; secrets grows as values are
// redacted, so that a token quoted somewhere unexpected (an echo in a
// body, an error message) is caught too.
type redactor struct {
	headers map[string]bool // canonical names
	fields  map[string]bool // lower-case names

	mu      sync.Mutex      // protects secrets
	secrets map[string]bool // every value redacted so far
}

func newRedactor(opts []RedactOption) *redactor {
	r := &redactor{headers: map[string]bool{}, fields: map[string]bool{}, secrets: map[string]bool{}}
	for _, h := range append([]string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"}, engine.DefaultSensitiveHeaders...) {
		r.headers[http.CanonicalHeaderKey(h)] = true
	}
	for _, f := range []string{"access_token", "refresh_token", "id_token", "token", "client_secret",
		"client_assertion", "password", "api_key", "apikey", "code_verifier"} {
		r.fields[f] = true
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// minSecret is the shortest value scrub replaces wherever it appears;
// shorter ones ("1", "no") would mangle ordinary text.
const minSecret = 8

func (r *redactor) learn(v string) {
	if len(v) < minSecret || v == Redacted {
		return
	}
	r.mu.Lock()
	r.secrets[v] = true
	r.mu.Unlock()
}

// scrub replaces every secret seen so far in s.
func (r *redactor) scrub(s string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for v := range r.secrets {
		s = strings.ReplaceAll(s, v, Redacted)
	}
	return s
}

// url returns u with its user info dropped and its sensitive query
// parameters redacted, the others as they were, in their order.
func (r *redactor) url(u *url.URL) string {
	cp := *u
	if pw, ok := u.User.Password(); ok {
		r.learn(pw)
	}
	cp.User = nil
	cp.RawQuery = r.pairs(u.RawQuery, "&")
	return cp.String()
}

// pairs redacts the values of sensitive keys in a query or form.
func (r *redactor) pairs(raw, sep string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, sep)
	for i, p := range parts {
		k, v, _ := strings.Cut(p, "=")
		key, err := url.QueryUnescape(k)
		if err != nil || !r.fields[strings.ToLower(key)] {
			continue
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			r.learn(uv)
		}
		parts[i] = k + "=" + Redacted
	}
	return strings.Join(parts, sep)
}

// header returns a copy of h with the values of sensitive headers
// redacted: a cookie keeps its name and attributes, a credential its
// scheme.
func (r *redactor) header(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if !r.headers[ck] {
			out[ck] = append([]string(nil), vs...)
			continue
		}
		red := make([]string, len(vs))
		for i, v := range vs {
			red[i] = r.headerValue(ck, v)
		}
		out[ck] = red
	}
	return out
}

func (r *redactor) headerValue(name, v string) string {
	switch name {
	case "Cookie":
		var out []string
		for c := range strings.SplitSeq(v, ";") {
			n, val, _ := strings.Cut(strings.TrimSpace(c), "=")
			r.learn(val)
			out = append(out, n+"="+Redacted)
		}
		return strings.Join(out, "; ")
	case "Set-Cookie":
		pair, attrs, hasAttrs := strings.Cut(v, ";")
		n, val, _ := strings.Cut(pair, "=")
		r.learn(strings.TrimSpace(val))
		if hasAttrs {
			return n + "=" + Redacted + ";" + attrs
		}
		return n + "=" + Redacted
	case "Authorization", "Proxy-Authorization":
		if scheme, cred, ok := strings.Cut(v, " "); ok {
			r.learn(strings.TrimSpace(cred))
			return scheme + " " + Redacted
		}
	}
	r.learn(v)
	return Redacted
}

// body returns body with its sensitive fields redacted when it is JSON or
// a form; any other body is returned as it is.
func (r *redactor) body(contentType string, body []byte) []byte {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/x-www-form-urlencoded":
		return []byte(r.pairs(string(body), "&"))
	case mt == "application/json" || strings.HasSuffix(mt, "+json"),
		mt == "" && json.Valid(body):
		if out, ok := r.json(body); ok {
			return out
		}
	}
	return body
}

// json rewrites a JSON document with the values of sensitive members
// redacted, keeping the members' order; it reports false when body is
// not one JSON value.
func (r *redactor) json(body []byte) ([]byte, bool) {
	if !bytes.ContainsAny(body, `"`) {
		return body, json.Valid(body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var out bytes.Buffer
	changed := false
	if err := r.copyJSON(dec, &out, false, &changed); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	if !changed { // nothing to hide: the body as it came, byte for byte
		return body, true
	}
	if bytes.HasSuffix(body, []byte("\n")) {
		out.WriteByte('\n')
	}
	return out.Bytes(), true
}

// copyJSON copies one value from dec to out, redacting it when redact is
// set, and the members of objects whose names are sensitive; it sets
// *changed when it redacted anything.
func (r *redactor) copyJSON(dec *json.Decoder, out *bytes.Buffer, redact bool, changed *bool) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		end := byte('}')
		if t == '[' {
			end = ']'
		}
		out.WriteByte(byte(t))
		for first := true; dec.More(); first = false {
			if !first {
				out.WriteByte(',')
			}
			member := redact
			if t == '{' {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := kt.(string)
				writeJSON1(out, key)
				out.WriteByte(':')
				member = redact || r.fields[strings.ToLower(key)]
			}
			if err := r.copyJSON(dec, out, member, changed); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
		out.WriteByte(end)
	case string:
		if redact {
			r.learn(t)
			t, *changed = Redacted, true
		}
		writeJSON1(out, t)
	case nil:
		out.WriteString("null")
	default: // json.Number, bool
		if redact {
			writeJSON1(out, Redacted)
			*changed = true
		} else {
			writeJSON1(out, t)
		}
	}
	return nil
}

// writeJSON1 writes one JSON value, with no HTML escaping, so that the
// text around what was redacted stays as near as it was.
func writeJSON1(out *bytes.Buffer, v any) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	out.Truncate(out.Len() - 1) // Encode's newline
}

// digest is the hex SHA-256 of a redacted body, the part of a request
// that matching looks at.
func digest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}
