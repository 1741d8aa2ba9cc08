package main

// Crawls: `courier fetch --paginate STRATEGY [--max-pages N] [--cache DIR]`.
//
// With --paginate each input line is the first page of a crawl, and every
// page gets an output line carrying the input line's "line" and "id" and
// a "page" number from 1; lines are written in input order, a line's
// pages in page order. Up to crawlLines lines are crawled at once, each
// with up to crawlWindow pages ahead when its last page is known, and a
// line asks for a page only when the one it yielded before is written, so
// it holds at most its window of pages fetched and not yet written, and
// all lines together at most --concurrency.
//
// With --resume the output file is the checkpoint: each page's line also
// carries "next", the URL of the page after it while the crawl is not
// done. A killed run started again finds, for each line, its last page
// written and carries on from that page's next, numbering on: it fetches
// again at most --concurrency pages.

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/paginate"
	"github.com/courier-go/courier/requests"
)

// crawlOptions are fetch's flags for crawls and the cache.
type crawlOptions struct {
	paginate string
	maxPages int
	items    string
	cache    string
	window   int // pages ahead a line, set by runCrawl
	// strategy makes the line's paginator, bounded to max pages (0: none);
	// set by check when --paginate is.
	strategy func(max int) paginate.Paginator
}

func (o *crawlOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.paginate, "paginate", "", "each line is a first page; follow its pages: link, cursor:FIELD=PARAM, page:PARAM or offset:PARAM:SIZE")
	fs.IntVar(&o.maxPages, "max-pages", 0, "with --paginate, pages per line at most (0: no bound)")
	fs.StringVar(&o.items, "items", "", "with --paginate page or offset, the JSON field that holds a page's items (default: the body is the array)")
	fs.StringVar(&o.cache, "cache", "", "keep answers in this directory and revalidate them across runs (or \"redis\", shared by the fleet, with --redis)")
}

// check parses --paginate and checks the flags that depend on it.
func (o *crawlOptions) check() error {
	if o.maxPages < 0 {
		return fmt.Errorf("--max-pages must not be negative, got %d", o.maxPages)
	}
	if o.paginate == "" {
		switch {
		case o.maxPages != 0:
			return fmt.Errorf("--max-pages needs --paginate")
		case o.items != "":
			return fmt.Errorf("--items needs --paginate page or offset")
		}
		return nil
	}
	kind, arg, _ := strings.Cut(o.paginate, ":")
	opts := func(limit int) []paginate.Option {
		return []paginate.Option{paginate.MaxPages(limit), paginate.Parallel(max(o.window, 1)), paginate.Items(o.items)}
	}
	bad := func(want string) error {
		return fmt.Errorf("--paginate %q: want %s", o.paginate, want)
	}
	switch kind {
	case "link":
		if arg != "" {
			return bad("link, with nothing after it")
		}
		o.strategy = func(max int) paginate.Paginator { return paginate.Link(opts(max)...) }
	case "cursor":
		field, param, ok := strings.Cut(arg, "=")
		if !ok || field == "" || param == "" {
			return bad("cursor:FIELD=PARAM, such as cursor:meta.next_cursor=cursor")
		}
		o.strategy = func(max int) paginate.Paginator { return paginate.Cursor(field, param, opts(max)...) }
	case "page":
		if arg == "" || strings.Contains(arg, ":") {
			return bad("page:PARAM, such as page:page")
		}
		o.strategy = func(max int) paginate.Paginator { return paginate.Page(arg, opts(max)...) }
	case "offset":
		param, sz, ok := strings.Cut(arg, ":")
		size, err := strconv.Atoi(sz)
		if !ok || param == "" || err != nil || size < 1 {
			return bad("offset:PARAM:SIZE with a SIZE of at least 1, such as offset:offset:100")
		}
		o.strategy = func(max int) paginate.Paginator { return paginate.Offset(param, size, opts(max)...) }
	default:
		return bad("link, cursor:FIELD=PARAM, page:PARAM or offset:PARAM:SIZE")
	}
	if o.items != "" && kind != "page" && kind != "offset" {
		return fmt.Errorf("--items needs --paginate page or offset")
	}
	return nil
}

// applyCache sets cfg.Cache from --cache: a directory, or the fleet's
// cache on Redis.
func (o *crawlOptions) applyCache(cfg *engine.Config, fm *fleetMode) error {
	switch o.cache {
	case "":
		return nil
	case "redis":
		if fm == nil {
			return fmt.Errorf("--cache redis needs --redis")
		}
		c, err := fleet.NewCache(fm.rdb, fm.name, fleet.CacheOptions{})
		if err != nil {
			return fmt.Errorf("--cache: %v", err)
		}
		cfg.Cache = c
	default:
		c, err := engine.NewFileCache(o.cache, fileCacheBytes)
		if err != nil {
			return fmt.Errorf("--cache: %v", err)
		}
		cfg.Cache = c
	}
	return nil
}

// fileCacheBytes bounds a --cache directory.
const fileCacheBytes = 1 << 30

// crawlWindow is how many pages of one line run ahead when its last page
// is known (paginate.Parallel); crawlLines how many lines are crawled at
// once for a --concurrency: together never more pages than that.
const crawlWindow = 8

func crawlLines(concurrency int) (lines, window int) {
	window = min(crawlWindow, max(concurrency, 1))
	return max(concurrency/window, 1), window
}

// crawlJob is one input line on its way to the writer: its pages come on
// pages, in order, until it is closed.
type crawlJob struct {
	meta  lineMeta
	hash  string
	page  int       // the number of the first page crawled
	pages chan page // unbuffered: a crawl runs ahead by its window only
	// written is told when a page is written: the crawl asks for the page
	// after it only then, so the pages fetched and not written are the
	// window at most (the page being written among them).
	written chan struct{}
	err     error // the input cannot go on: stop here
}

// page is one page's outcome.
type page struct {
	resp *requests.Response
	err  error
	next string // the next page's URL, "" at the end
	// more is set when the crawl yields another page after this one (or
	// an error in its place: a next link that cannot be followed).
	more bool
}

// crawler runs a --paginate fetch, resumable or not.
type crawler struct {
	o      *crawlOptions
	lines  int         // lines crawled at once
	window int         // pages ahead a line
	target *checkpoint // with --resume: the file written, and its answers
	kept   int         // pages kept from before; owned by run's goroutine
}

// run crawls every line of src and writes the pages to out in order.
func (c *crawler) run(ctx context.Context, e *engine.Engine, src *input, out io.Writer, bar *progress, sum *summary) (int, error) {
	defer src.Stop()
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan *crawlJob, c.lines)
	sem := make(chan struct{}, c.lines)
	var wg sync.WaitGroup // the reader and every crawl
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		c.read(ctx, e, src, sem, jobs, &wg)
	}()
	defer wg.Wait()
	defer func() {
		cancel()
		for j := range jobs { // let the reader and the crawls go
			if j.pages != nil {
				for range j.pages {
				}
			}
		}
	}()
	code := exitOK
	start := time.Now()
	var enc resultEncoder
	hashed := c.target != nil
	for j := range jobs {
		if j.err != nil {
			return exitFailed, j.err
		}
		if j.pages == nil { // an input line that failed, or one done before
			if j.meta.in.err != nil {
				r := describe(j.meta, engine.Result{Err: j.meta.in.err})
				code = sum.add(&r, j.meta.in.err, code)
				if err := c.write(out, &enc, &r, hashed, j.hash); err != nil {
					return exitFailed, err
				}
			}
			continue
		}
		n := j.page
		for p := range j.pages {
			if p.err != nil && ctx.Err() != nil && errors.Is(p.err, context.Canceled) {
				// Stopped, not answered: the next run fetches it.
				cancel()
				continue
			}
			r := pageResult(j.meta, p, n)
			n++
			code = sum.add(&r, p.err, code)
			if err := c.write(out, &enc, &r, hashed, j.hash); err != nil {
				return exitFailed, err
			}
			bar.add()
			select {
			case j.written <- struct{}{}:
			case <-ctx.Done():
			}
		}
	}
	sum.elapsed = time.Since(start)
	if ctx.Err() != nil {
		return interrupted(parent)
	}
	if err := src.Err(); err != nil {
		return exitFailed, err
	}
	return code, nil
}

// write writes one result line in one write: a crash tears at most it.
func (c *crawler) write(out io.Writer, enc *resultEncoder, r *result, hashed bool, hash string) error {
	line, err := enc.encode(r, hashed, hash)
	if err == nil {
		_, err = out.Write(line)
	}
	if err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	return nil
}

// pageResult is page n's output line: the input line's, with the page's
// number, its path and the next page's URL. Local crawls and a batch's
// workers both write it.
func pageResult(m lineMeta, p page, n int) result {
	r := describe(m, engine.Result{Response: p.resp, Err: p.err})
	r.Page, r.Next = n, p.next
	if p.resp != nil && p.resp.Request != nil {
		r.Path = pagePath(p.resp.Request.Path)
	}
	return r
}

// pagePath is a page's URL as an output line shows it: the path and
// query, without the scheme and host, which are the base URL's.
func pagePath(abs string) string {
	u, err := url.Parse(abs)
	if err != nil || !u.IsAbs() {
		return abs
	}
	return u.RequestURI()
}

// read walks the input and sends the writer a job for each line, in
// order, starting each line's crawl as sem allows. With a checkpoint it
// skips the lines done, and starts a line cut short at its next page.
func (c *crawler) read(ctx context.Context, e *engine.Engine, src *input, sem chan struct{}, jobs chan<- *crawlJob, wg *sync.WaitGroup) {
	send := func(j *crawlJob) bool {
		select {
		case jobs <- j:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var done []answer
	if c.target != nil {
		done = c.target.answers
	}
	changed := func(line int, what string) *crawlJob {
		return &crawlJob{err: badCheckpoint("input line %d %s: the input changed since this batch started (use a new --out file for a new batch)", line, what)}
	}
	feed := lineFeed{src: src}
	for {
		raw, ok := feed.next(ctx)
		if !ok {
			break
		}
		n, text := raw.n, raw.text
		if raw.err != nil {
			text = fmt.Sprintf("\x00line %d over --max-line", n)
		}
		hash := lineHash(text)
		if len(done) > 0 && done[0].line < n {
			send(changed(done[0].line, "is answered in the checkpoint but is now blank or a comment"))
			return
		}
		if raw.err == nil && blankOrComment(text) {
			continue
		}
		line, _ := src.parse(raw)
		j := &crawlJob{meta: lineMeta{in: line, start: time.Now()}, hash: hash, page: 1}
		first := line.req
		if len(done) > 0 && done[0].line == n {
			// Pages of this line written before: carry on after the last.
			if done[0].hash != hash {
				send(changed(n, "does not match its answer in the checkpoint"))
				return
			}
			last := done[0]
			for len(done) > 0 && done[0].line == n {
				last, done = done[0], done[1:]
				c.kept++
			}
			if last.next == "" || last.failed || line.err != nil {
				continue // the line is done
			}
			first, j.page = resumeAt(first, last.next), last.page+1
		}
		if line.err != nil {
			if !send(j) {
				return
			}
			continue
		}
		max := 0
		if c.o.maxPages > 0 {
			if max = c.o.maxPages - (j.page - 1); max <= 0 {
				continue
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		j.pages, j.written = make(chan page), make(chan struct{})
		p := c.o.strategy(max)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer close(j.pages)
			c.crawl(ctx, e, first, p, max, j.pages, j.written)
		}()
		if !send(j) {
			for range j.pages { // its crawl ends with ctx
			}
			return
		}
	}
	if err := src.Err(); err != nil {
		send(&crawlJob{err: err})
		return
	}
	if len(done) > 0 {
		send(changed(done[0].line, "is answered in the checkpoint but missing from the input"))
	}
}

// crawl sends every page of one line's crawl from first, with the URL of
// the page after it, each once the one before is written.
func (c *crawler) crawl(ctx context.Context, e *engine.Engine, first *requests.Request, p paginate.Paginator, max int, pages chan<- page, written <-chan struct{}) {
	n := 0
	for resp, err := range e.Pages(ctx, first, p) {
		n++
		pg := newPage(p, resp, err, n, max)
		select {
		case pages <- pg:
		case <-ctx.Done():
			return
		}
		select {
		case <-written:
		case <-ctx.Done():
			return
		}
	}
}

// newPage is the n-th page a crawl bounded to max pages (0: none)
// yielded, with the URL of the page after it, if any.
func newPage(p paginate.Paginator, resp *requests.Response, err error, n, max int) page {
	pg := page{resp: resp, err: err}
	if err == nil && (max == 0 || n < max) {
		next, nerr := p.Next(resp)
		if nerr == nil && next != nil {
			pg.next = nextURL(next)
		}
		pg.more = nerr != nil || next != nil
	}
	return pg
}

// resumeAt is the first request of a crawl that carries on at next, the
// URL a checkpoint kept: first's, with next for its path and query.
func resumeAt(first *requests.Request, next string) *requests.Request {
	resumed := *first
	resumed.Path, resumed.Query = next, nil
	return &resumed
}

// nextURL is the absolute URL of a next page's request, as the
// checkpoint keeps it.
func nextURL(req *requests.Request) string {
	u, err := url.Parse(req.Path)
	if err != nil {
		return ""
	}
	if len(req.Query) > 0 {
		q := u.Query()
		for k, vs := range req.Query {
			q[k] = append(q[k], vs...)
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// runCrawl is `courier fetch --paginate`, with or without --resume.
func runCrawl(ctx context.Context, o *fetchOptions, fs *pflag.FlagSet, cfg engine.Config, startInput func() *input, stdout, stderr io.Writer) int {
	fail := failer(stderr, "fetch", false)
	if o.resume.resumeFailed || o.resume.idempotencyKeys {
		return fail(exitUsage, "--paginate takes --resume, not --resume-failed or --idempotency-keys")
	}
	c := &crawler{o: &o.crawl}
	c.lines, c.window = crawlLines(o.concurrency)
	o.crawl.window = c.window
	var out io.Writer // nil: as fetch (--out FILE, or stdout)
	if o.resume.resume {
		if o.out == "" {
			return fail(exitUsage, "--resume needs --out FILE: the output file is the checkpoint")
		}
		var err error
		if c.target, err = openCheckpoint(o.out); err != nil {
			if errors.As(err, new(*checkpointError)) {
				return fail(exitUsage, "%v", err)
			}
			return fail(exitUsage, "--out: %v", err)
		}
		defer c.target.close()
		out = c.target.f
	}
	return o.runLocal(fs, cfg, localRun{
		out: out,
		run: func(e *engine.Engine, out io.Writer, bar *progress, sum *summary) (int, error) {
			return c.run(ctx, e, startInput(), out, bar, sum)
		},
		note: func(w io.Writer) {
			if c.kept > 0 {
				fmt.Fprintf(w, "kept        %d pages answered before\n", c.kept)
			}
		},
	}, stdout, stderr, fail)
}
