package engine

import (
	"context"
	"fmt"
	"iter"
	"net/url"

	"github.com/courier-go/courier/internal/redact"
	"github.com/courier-go/courier/paginate"
	"github.com/courier-go/courier/requests"
)

// Pages crawls a paginated collection: it sends first, yields its answer,
// asks p for the next page's request, and so on until p says there is
// none, yielding every page in order. Each page is a request through the
// engine: token, refresh, retries, pacing, dedup and the cache all apply.
//
// The iteration ends after the last page; at the first error, which is
// yielded (with the page's response when one came: a non-2xx answer gives
// both) and is the last value; after [paginate.MaxPages] pages; or when
// the caller breaks out, which cancels every page in flight. A next page
// that this crawl has fetched already (a self-link or a cycle) ends it
// with an error matching [paginate.ErrLoop], and one on another origin
// than first's with [paginate.ErrOtherOrigin]: nothing is sent there.
//
// Each page's Request, as p and the caller see it, has an absolute URL in
// its Path. When p is a [paginate.Planner] that knows every remaining page
// (the last page linked, or a total), they are fetched in parallel, at
// most the plan's window ahead of the caller, and still yielded in order.
//
// A ctx or first that is nil, or a first that cannot be sent, is yielded
// as an error and nothing is sent.
func (e *Engine) Pages(ctx context.Context, first *requests.Request, p paginate.Paginator) iter.Seq2[*requests.Response, error] {
	return func(yield func(*requests.Response, error) bool) {
		if ctx == nil {
			yield(nil, errNilContext)
			return
		}
		if p == nil {
			yield(nil, fmt.Errorf("courier: pages: nil Paginator"))
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // a page in flight when the caller breaks out
		c := crawl{e: e, seen: map[string]int{}}
		if l, ok := p.(paginate.Limited); ok {
			c.max = l.MaxPages()
		}
		if first == nil {
			yield(nil, fmt.Errorf("courier: pages: %w", first.Err())) // the nil request's error
			return
		}
		req, err := c.admit(first)
		for err == nil && req != nil {
			var resp *requests.Response
			resp, err = e.Do(ctx, req)
			c.n++
			if err != nil {
				yield(resp, err)
				return
			}
			if pl, ok := p.(paginate.Planner); ok && !c.done() {
				if pages, window := pl.Plan(resp); window > 0 && pages != nil {
					c.parallel(ctx, p, resp, pages, window, yield)
					return
				}
			}
			if !yield(resp, nil) || c.done() {
				return
			}
			var next *requests.Request
			if next, err = p.Next(resp); err != nil {
				err = fmt.Errorf("courier: pages: after page %d: %w", c.n, err)
				break
			}
			req, err = c.admit(next)
		}
		if err != nil {
			yield(nil, err)
		}
	}
}

// crawl is the state of one Pages iteration, owned by its caller's
// goroutine.
type crawl struct {
	e      *Engine
	origin string         // the first page's
	seen   map[string]int // page key to the number of the page that had it
	n      int            // pages answered so far
	max    int            // 0: no bound
}

// done reports whether the crawl has had as many pages as it may.
func (c *crawl) done() bool { return c.max > 0 && c.n >= c.max }

// admit checks the next page's request and returns it with its URL made
// absolute; a nil req is the end of the crawl.
func (c *crawl) admit(req *requests.Request) (*requests.Request, error) {
	if req == nil {
		return nil, nil
	}
	if err := req.Err(); err != nil {
		return nil, fmt.Errorf("courier: pages: page %d: %w", c.n+1, err)
	}
	u, err := c.e.resolve(req)
	if err != nil {
		return nil, fmt.Errorf("courier: pages: page %d: %w", c.n+1, err)
	}
	o := origin(&u)
	if c.origin == "" {
		c.origin = o
	} else if o != c.origin {
		return nil, fmt.Errorf("courier: pages: page %d links to %s, on another origin than the first page's (%s): %w",
			c.n, redact.URL(&u), c.origin, paginate.ErrOtherOrigin)
	}
	key := pageKey(req, &u)
	if at, ok := c.seen[key]; ok {
		return nil, fmt.Errorf("courier: pages: page %d links back to page %d (%s %s): %w",
			c.n, at, req.MethodOrGet(), redact.URL(&u), paginate.ErrLoop)
	}
	c.seen[key] = c.n + 1
	abs := *req
	abs.Path = u.String()
	abs.Query = nil
	return &abs, nil
}

// pageKey names a page's request within a crawl: its method and its URL
// with the query sorted.
func pageKey(req *requests.Request, u *url.URL) string {
	cp := *u
	cp.RawQuery = cp.Query().Encode()
	cp.Fragment, cp.RawFragment = "", ""
	return req.MethodOrGet() + " " + cp.String()
}

// parallel yields resp, the page that made the plan, and the planned
// pages after it, in order, fetching them at most window ahead of the
// caller; the first window are sent before resp is yielded. Next is still
// asked on each page: a nil request (an empty page) or an error ends the
// crawl.
func (c *crawl) parallel(ctx context.Context, p paginate.Paginator, resp *requests.Response, pages iter.Seq[*requests.Request], window int, yield func(*requests.Response, error) bool) {
	next, stop := iter.Pull(pages)
	defer stop()
	type ahead struct {
		f   *Future
		err error // the page could not be admitted
	}
	var q []ahead // oldest first
	more := true
	fill := func() {
		for more && len(q) < window && (c.max == 0 || c.n+len(q) < c.max) {
			req, ok := next()
			if !ok || req == nil {
				more = false
				return
			}
			abs, err := c.admit(req)
			if err != nil {
				q = append(q, ahead{err: err})
				more = false
				return
			}
			q = append(q, ahead{f: c.e.Submit(ctx, abs)})
		}
	}
	fill()
	if !yield(resp, nil) {
		return
	}
	for fill(); len(q) > 0; fill() {
		a := q[0]
		q = q[1:]
		if a.err != nil {
			yield(nil, a.err)
			return
		}
		resp, err := a.f.Await(ctx)
		c.n++
		if err != nil {
			yield(resp, err)
			return
		}
		if !yield(resp, nil) || c.done() {
			return
		}
		nreq, err := p.Next(resp)
		if err != nil {
			yield(nil, fmt.Errorf("courier: pages: after page %d: %w", c.n, err))
			return
		}
		if nreq == nil {
			return // the pages still ahead are cancelled with ctx
		}
	}
}
