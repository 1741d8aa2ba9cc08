package paginate

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/url"
	"strconv"
	"strings"

	"github.com/courier-go/courier/requests"
)

// Paginator says which page comes after an answered one. Next is given
// each page's response (whose Request is the page's request, its Path an
// absolute URL) and returns the next page's request, or nil when resp is
// the last page. An error ends the crawl and is yielded.
//
// Next may be called from any goroutine, and for several crawls at once:
// a Paginator used by more than one crawl must be safe for concurrent use.
// The strategies of this package are.
type Paginator interface {
	Next(resp *requests.Response) (*requests.Request, error)
}

// Planner is implemented by a [Paginator] that can tell, from one page,
// every page still to come: the crawl then fetches them in parallel, at
// most window at a time ahead of the caller, and yields them in order.
// Plan returns window 0 when resp does not say where the crawl ends; the
// crawl then goes on one page at a time, asking again on the next page.
// Once a plan is made, Next is still called on each page, and a nil
// request from it (an empty page, say) ends the crawl early.
type Planner interface {
	Paginator
	Plan(resp *requests.Response) (pages iter.Seq[*requests.Request], window int)
}

// Limited is implemented by a [Paginator] with a bound on the number of
// pages: the crawl ends quietly after MaxPages pages. 0 means no bound.
type Limited interface {
	MaxPages() int
}

// Option sets one property of a strategy.
type Option func(*options)

type options struct {
	maxPages int
	items    string // JSON path of the items array; "" is the top level
	total    string // JSON path of the total number of items; "" is none
	window   int
}

// defaultWindow is how many pages run ahead when the last page is known
// and no [Parallel] option says otherwise.
const defaultWindow = 8

// MaxPages ends the crawl quietly after n pages; n <= 0 means no bound.
func MaxPages(n int) Option { return func(o *options) { o.maxPages = max(n, 0) } }

// Items names the JSON array holding a page's items for [Page] and
// [Offset], as a dotted path of object fields ("data" or "result.items");
// the default is the body itself, a top-level array. A page whose array
// is empty, null or missing ends the crawl.
func Items(path string) Option { return func(o *options) { o.items = path } }

// Total names the JSON field, a dotted path, that gives the number of
// items of the whole collection (as in {"total": 1234, "items": […]}).
// Once [Page] or [Offset] knows it, every remaining page is fetched in
// parallel (see [Parallel]).
func Total(path string) Option { return func(o *options) { o.total = path } }

// Parallel bounds how many pages are fetched ahead of the caller when the
// last page is known up front (a Link rel="last", or a [Total]); the
// default is 8, and 1 fetches one page at a time.
func Parallel(n int) Option { return func(o *options) { o.window = max(n, 1) } }

func newOptions(opts []Option) options {
	o := options{window: defaultWindow}
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// MaxPages returns the bound set with [MaxPages]; 0 means none.
func (o options) MaxPages() int { return o.maxPages }

// pageURL returns the absolute URL of resp's request.
func pageURL(resp *requests.Response) (*url.URL, error) {
	if resp == nil || resp.Request == nil {
		return nil, fmt.Errorf("paginate: response has no request")
	}
	u, err := url.Parse(resp.Request.Path)
	if err != nil {
		return nil, fmt.Errorf("paginate: page URL: %w", err)
	}
	if len(resp.Request.Query) > 0 {
		q := u.Query()
		for k, vs := range resp.Request.Query {
			q[k] = append(q[k], vs...)
		}
		u.RawQuery = q.Encode()
	}
	return u, nil
}

// withParam returns a copy of req whose query parameter param is value,
// once, whether req had it in its Path or its Query.
func withParam(req *requests.Request, param, value string) *requests.Request {
	next := *req
	next.Query = url.Values{}
	for k, vs := range req.Query {
		if k != param {
			next.Query[k] = append([]string(nil), vs...)
		}
	}
	if i := strings.IndexByte(next.Path, '?'); i >= 0 {
		if q, err := url.ParseQuery(next.Path[i+1:]); err == nil {
			if _, ok := q[param]; ok {
				q.Del(param)
				next.Path = next.Path[:i]
				if len(q) > 0 {
					next.Path += "?" + q.Encode()
				}
			}
		}
	}
	next.Query.Set(param, value)
	return &next
}

// param returns the value of query parameter param of req, from its Query
// or its Path.
func param(req *requests.Request, name string) (string, bool) {
	if vs, ok := req.Query[name]; ok && len(vs) > 0 {
		return vs[0], true
	}
	if i := strings.IndexByte(req.Path, '?'); i >= 0 {
		if q, err := url.ParseQuery(req.Path[i+1:]); err == nil && q.Has(name) {
			return q.Get(name), true
		}
	}
	return "", false
}

// lookup walks the dotted path of object fields through v; "" is v itself.
func lookup(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	for _, f := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[f]; !ok {
			return nil, false
		}
	}
	return v, true
}

// decode parses a page's body as JSON, numbers kept exact.
func decode(resp *requests.Response) (any, error) {
	d := json.NewDecoder(strings.NewReader(string(resp.Body)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("paginate: page %s is not JSON: %w", redacted(resp), err)
	}
	return v, nil
}

// countItems returns how many items resp's page holds at path.
func countItems(resp *requests.Response, path string) (int, any, error) {
	v, err := decode(resp)
	if err != nil {
		return 0, nil, err
	}
	items, ok := lookup(v, path)
	if !ok || items == nil {
		return 0, v, nil
	}
	a, ok := items.([]any)
	if !ok {
		where := "the body"
		if path != "" {
			where = strconv.Quote(path)
		}
		return 0, v, fmt.Errorf("paginate: page %s: %s is a %s, not an array of items", redacted(resp), where, kind(items))
	}
	return len(a), v, nil
}

// total reads the number of items of the collection at path from v.
func total(v any, path string) (int, bool) {
	t, ok := lookup(v, path)
	if !ok {
		return 0, false
	}
	var n int64
	var err error
	switch t := t.(type) {
	case json.Number:
		n, err = t.Int64()
	case string:
		n, err = strconv.ParseInt(t, 10, 64)
	default:
		return 0, false
	}
	if err != nil || n < 0 || n > 1<<40 {
		return 0, false
	}
	return int(n), true
}

func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	}
	return fmt.Sprintf("%T", v)
}

// redacted names resp's page without its query, which may carry secrets.
func redacted(resp *requests.Response) string {
	if resp == nil || resp.Request == nil {
		return "?"
	}
	p := resp.Request.Path
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if u, err := url.Parse(p); err == nil {
		u.User = nil
		return u.String()
	}
	return "?"
}

// ErrLoop ends a crawl whose next page is one the crawl has fetched
// already (a page that links to itself, or a cycle of pages).
var ErrLoop = errors.New("paginate: next page fetched already in this crawl")

// ErrOtherOrigin ends a crawl whose next page is on another origin than
// the first page: nothing is sent there.
var ErrOtherOrigin = errors.New("paginate: next page on another origin")
