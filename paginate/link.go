package paginate

import (
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/courier-go/courier/requests"
)

// Link returns the strategy of RFC 8288 Link headers: the next page is the
// target of the link whose relation types include "next", an absolute or
// relative URI reference (resolved against the page's URL), in any of the
// response's Link header fields. The crawl ends on a page without one.
//
// When a page also links rel="last" and the two links differ in one
// integer query parameter only (page=2 and page=100, as GitHub's API
// sends them), every page up to the last is known and fetched in
// parallel (see [Parallel]).
func Link(opts ...Option) Paginator { return &linkStrategy{newOptions(opts)} }

type linkStrategy struct{ options }

func (s *linkStrategy) Next(resp *requests.Response) (*requests.Request, error) {
	u, err := pageURL(resp)
	if err != nil {
		return nil, err
	}
	next := findLink(resp.Header, "next", u)
	if next == nil {
		return nil, nil
	}
	return linkRequest(resp.Request, next), nil
}

func (s *linkStrategy) Plan(resp *requests.Response) (iter.Seq[*requests.Request], int) {
	if s.window <= 1 {
		return nil, 0
	}
	u, err := pageURL(resp)
	if err != nil {
		return nil, 0
	}
	next, last := findLink(resp.Header, "next", u), findLink(resp.Header, "last", u)
	if next == nil || last == nil {
		return nil, 0
	}
	name, from, to, ok := counter(next, last)
	if !ok {
		return nil, 0
	}
	return func(yield func(*requests.Request) bool) {
		for i := from; i <= to; i++ {
			p := *next
			q := p.Query()
			q.Set(name, strconv.Itoa(i))
			p.RawQuery = q.Encode()
			if !yield(linkRequest(resp.Request, &p)) {
				return
			}
		}
	}, s.window
}

// linkRequest is prev's copy that asks for the absolute URL u.
func linkRequest(prev *requests.Request, u *url.URL) *requests.Request {
	next := *prev
	next.Path = u.String()
	next.Query = nil
	return &next
}

// counter finds the one query parameter in which next and last differ,
// both integers with next's no greater than last's.
func counter(next, last *url.URL) (name string, from, to int, ok bool) {
	if next.Scheme != last.Scheme || next.Host != last.Host || next.Path != last.Path {
		return "", 0, 0, false
	}
	nq, lq := next.Query(), last.Query()
	if len(nq) != len(lq) {
		return "", 0, 0, false
	}
	for k, nv := range nq {
		lv, found := lq[k]
		if !found || len(nv) != 1 || len(lv) != 1 {
			return "", 0, 0, false
		}
		if nv[0] == lv[0] {
			continue
		}
		if name != "" {
			return "", 0, 0, false // two parameters move: not a counter
		}
		a, err1 := strconv.Atoi(nv[0])
		b, err2 := strconv.Atoi(lv[0])
		if err1 != nil || err2 != nil || a > b || b-a > 1<<20 {
			return "", 0, 0, false
		}
		name, from, to = k, a, b
	}
	return name, from, to, name != ""
}

// findLink returns the target, resolved against base, of the first link
// in h whose relation types include rel.
func findLink(h http.Header, rel string, base *url.URL) *url.URL {
	for _, field := range h.Values("Link") {
		for _, l := range parseLinks(field) {
			for _, r := range strings.Fields(l.rel) {
				if strings.EqualFold(r, rel) {
					ref, err := url.Parse(l.target)
					if err != nil {
						break
					}
					return base.ResolveReference(ref)
				}
			}
		}
	}
	return nil
}

type link struct{ target, rel string }

// parseLinks reads one Link header field: links separated by commas, each
// a <URI-reference> followed by ;-separated parameters whose values may be
// tokens or quoted strings (RFC 8288 section 3). A malformed link is
// skipped; the rest are kept.
func parseLinks(s string) []link {
	var out []link
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return out
		}
		if s[0] != '<' {
			// Not a link: skip to the next comma outside quotes.
			s = skipPast(s, ',')
			continue
		}
		end := strings.IndexByte(s, '>')
		if end < 0 {
			return out
		}
		l := link{target: strings.TrimSpace(s[1:end])}
		s = s[end+1:]
		// Parameters until the comma that ends this link.
		for {
			s = strings.TrimLeft(s, " \t")
			if s == "" || s[0] == ',' {
				break
			}
			if s[0] != ';' {
				s = skipPast(s, ',')
				break
			}
			s = strings.TrimLeft(s[1:], " \t")
			i := strings.IndexAny(s, "=;,")
			if i < 0 {
				i = len(s)
			}
			name := strings.ToLower(strings.TrimSpace(s[:i]))
			s = s[i:]
			var value string
			if strings.HasPrefix(s, "=") {
				value, s = paramValue(strings.TrimLeft(s[1:], " \t"))
			}
			if name == "rel" && l.rel == "" {
				l.rel = value
			}
		}
		out = append(out, l)
	}
}

// paramValue reads a token or a quoted string from the start of s.
func paramValue(s string) (value, rest string) {
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			switch c := s[i]; c {
			case '\\':
				if i+1 < len(s) {
					i++
					b.WriteByte(s[i])
				}
			case '"':
				return b.String(), s[i+1:]
			default:
				b.WriteByte(c)
			}
		}
		return b.String(), ""
	}
	i := strings.IndexAny(s, ";,")
	if i < 0 {
		i = len(s)
	}
	return strings.TrimSpace(s[:i]), s[i:]
}

// skipPast drops s up to and including the first sep outside quotes.
func skipPast(s string, sep byte) string {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			return s[i+1:]
		}
	}
	return ""
}
