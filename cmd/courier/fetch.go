package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
)

type fetchOptions struct {
	baseURL, out, logLevel, tokenFile                   string
	concurrency, queue, burst, maxAttempts              int
	rate                                                float64
	timeout                                             time.Duration
	headers                                             []string
	refreshPath, refreshMethod, refreshBody, clientAuth string
	refreshForm, noDedup, summary, progress, otlp       bool
	accessField, refreshField                           string
	sess                                                sessionOptions
	resume                                              resumeOptions  // resume.go
	limits                                              limitOptions   // limits.go
	saver                                               *savingStore   // set by config with --token-file; tokensave.go
	batch                                               batchOptions   // batch.go
	rates                                               rateOptions    // rate.go
	fleet                                               fleetOptions   // fleet.go
	crawl                                               crawlOptions   // crawl.go
	breaker                                             breakerOptions // breaker.go
}

func fetchFlags(o *fetchOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("fetch", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.baseURL, "base-url", "", "the API's base URL (required)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "requests in flight at once")
	fs.IntVar(&o.queue, "queue", 0, "requests waiting for a worker at most (0: 1024)")
	fs.Float64Var(&o.rate, "rate", 0, "requests per second, retries included (0: unlimited)")
	fs.IntVar(&o.burst, "burst", 0, "requests allowed at once above the rate (0: the rate, at least 1)")
	o.rates.flags(fs)
	o.breaker.flags(fs)
	fs.IntVar(&o.maxAttempts, "max-attempts", 3, "attempts per request, the first included")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "time limit of each attempt, reading the body included")
	fs.StringArrayVarP(&o.headers, "header", "H", nil, "header 'Key: Value' for every request (repeatable)")
	fs.StringVar(&o.refreshPath, "refresh-path", "", "the token refresh endpoint, enabling refresh on 401: a path joins --base-url's path as request paths do (--base-url https://h/v1 and /auth/refresh: https://h/v1/auth/refresh); an absolute URL is taken as it is")
	fs.StringVar(&o.refreshMethod, "refresh-method", "POST", "the refresh endpoint's method")
	fs.StringVar(&o.refreshBody, "refresh-body", "", "JSON object sent with the refresh (the refresh token goes in as refresh_token)")
	fs.BoolVar(&o.refreshForm, "refresh-form", false, "send the refresh as the OAuth 2.0 form (grant_type=refresh_token)")
	fs.StringVar(&o.clientAuth, "client-auth", "basic", "how COURIER_CLIENT_ID and COURIER_CLIENT_SECRET are sent: basic or post")
	fs.StringVar(&o.accessField, "access-token-field", "access_token", "the refresh answer's access token field")
	fs.StringVar(&o.refreshField, "refresh-token-field", "refresh_token", "the refresh token field, in the refresh and its answer")
	fs.StringVar(&o.tokenFile, "token-file", "", "JSON file with access_token and refresh_token: the session's store, written back durably after each refresh and shared with every courier using it")
	sessionFlags(fs, &o.sess)
	fs.BoolVar(&o.noDedup, "no-dedup", false, "send identical requests separately")
	fs.StringVar(&o.out, "out", "", "write results to this file instead of stdout")
	resumeFlags(fs, &o.resume)
	o.crawl.flags(fs)
	o.limits.flags(fs)
	batchFlags(fs, &o.batch)
	o.fleet.flags(fs)
	progressFlag(fs, &o.progress)
	otlpFlag(fs, &o.otlp)
	fs.StringVar(&o.logLevel, "log-level", "error", "log to stderr at this level: off, error, warn, info or debug (error: what needs attention, such as a panic in a hook)")
	fs.BoolVar(&o.summary, "summary", true, "print a summary to stderr at the end (--summary=false to keep stderr quiet)")
	return fs
}

const fetchUsage = `Usage: courier fetch --base-url URL [flags] [FILE]

Reads one request per line from FILE, or stdin, and writes one JSON object
per request, in input order. A line is /path, METHOD /path, or a JSON object:
  {"id":1, "method":"POST", "path":"/x", "query":{"k":"v"}, "headers":{"K":"V"},
   "json":{...}, "files":{"field":["a.png","b.png"]}, "fields":{"k":"v"}}
Blank lines and lines starting with # are skipped (but counted).

With --paginate each line is the first page of a collection: every page
gets an output line with the line's "line" and "id" and a "page" number
from 1 (link: the Link header's rel="next"; cursor:FIELD=PARAM: a JSON
field, such as meta.next_cursor, into a query parameter; page:PARAM and
offset:PARAM:SIZE: until a page has no items). With --cache DIR answers are
kept and revalidated with If-None-Match / If-Modified-Since across runs;
an output line says "cache": "hit" or "revalidated" when the cache served
its body.

With --resume the --out file is a checkpoint: a killed run started again
with the same command fetches only the lines the file does not answer. Its
result lines carry one more field, "hash", a digest of the input line (the
first 128 bits of its SHA-256, in hex), checked on resume: a changed input
is an error.

Tokens come from COURIER_TOKEN and COURIER_REFRESH_TOKEN, or --token-file;
never from flags. Exit status: 0 all 2xx, 1 some failed or the rotated
tokens could not be saved to --token-file, 2 usage or configuration
error (such as invalid_client from the token endpoint), 3 session expired, 130 or 143 stopped by SIGINT or SIGTERM (every line answered by
then is written; a second signal ends courier at once).

Flags:
`

func runFetch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o fetchOptions
	code := o.run(ctx, args, stdin, stdout, stderr)
	// After the engine has closed: no refresh can come any more.
	return o.saver.finish(code)
}

func (o *fetchOptions) run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := fetchFlags(o)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, fetchUsage); fs.PrintDefaults() }
	fail := failer(stderr, "fetch", true)
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	if o.baseURL == "" {
		return fail(exitUsage, "--base-url is required")
	}
	if fs.NArg() > 1 {
		return fail(exitUsage, "at most one input FILE, got %d", fs.NArg())
	}
	cfg, err := o.config(stderr)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	uploads, err := newUploadGuard(o.limits.uploadRoot, o.tokenFile)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	parser, err := newLineParser(o.baseURL, uploads)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	flushOTLP, err := setupOTLP(ctx, o.otlp, &cfg, stderr)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	defer flushOTLP() // after every engine below is closed
	fm, err := o.fleet.apply(&cfg, &o.batch.redis, os.Getenv("COURIER_CLIENT_ID"), stderr)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	// Deferred before the engine's Close, so it runs after it.
	defer fm.close()
	if err := o.crawl.applyCache(&cfg, fm); err != nil {
		return fail(exitUsage, "%v", err)
	}
	if o.batch.wanted() {
		return runBatchFetch(ctx, o, fs, cfg, fm, parser, stdin, stderr)
	}
	inPath := fs.Arg(0) // "" or "-" for stdin
	if inPath != "" && inPath != "-" {
		// Stat, not open: opening a FIFO waits for its writer, which the
		// input goroutine does, where a signal can stop the batch.
		if _, err := os.Stat(inPath); err != nil {
			return fail(exitUsage, "input: %v", err)
		}
	}
	if err := checkOut(o.out, inPath, stdin, o.tokenFile); err != nil {
		return fail(exitUsage, "%v", err)
	}
	startInput := func() *input {
		return newInput(openInput(inPath, stdin), int(o.limits.maxLine), parser)
	}
	if o.crawl.strategy != nil {
		return runCrawl(ctx, o, fs, cfg, startInput, stdout, stderr)
	}
	if o.resume.wanted() {
		return runResumable(ctx, o, fs, cfg, startInput, stdout, stderr)
	}
	return o.runLocal(fs, cfg, localRun{
		run: func(e *engine.Engine, out io.Writer, bar *progress, sum *summary) (int, error) {
			return fetch(ctx, e, startInput(), out, o.window(), bar, sum)
		},
	}, stdout, stderr, fail)
}

// localRun is one fetch on this machine (not a batch on Redis): run
// fetches the input with e and writes the results to out.
type localRun struct {
	out  io.Writer // where results go; nil: a new --out FILE, or stdout
	run  func(e *engine.Engine, out io.Writer, bar *progress, sum *summary) (int, error)
	note func(w io.Writer) // adds to the summary; nil: nothing
}

// runLocal is the end that fetch and the resumable fetch share: it opens
// the output, builds the engine, runs l with a progress bar, reports l's
// error and prints the summary. fail reports a failure before the run.
func (o *fetchOptions) runLocal(fs *pflag.FlagSet, cfg engine.Config, l localRun, stdout, stderr io.Writer, fail func(code int, format string, a ...any) int) int {
	out := l.out
	if out == nil {
		out = stdout
		if o.out != "" {
			f, err := os.Create(o.out)
			if err != nil {
				return fail(exitUsage, "--out: %v", err)
			}
			defer f.Close()
			out = f
		}
	}
	e, err := engine.New(cfg)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	defer o.closeEngine(e, stderr)

	bar := newProgress(fs, o.progress, -1, stderr, "fetching")
	var sum summary
	code, err := l.run(e, out, bar, &sum)
	bar.done()
	sum.explain(stderr, "fetch")
	if err != nil {
		fmt.Fprintf(stderr, "courier fetch: %v\n", err)
		if errors.As(err, new(*checkpointError)) {
			code = exitUsage
		} else if code == exitOK {
			code = exitFailed
		}
	}
	if o.summary {
		if l.note != nil {
			l.note(stderr)
		}
		st := e.Stats()
		sum.print(stderr, st)
		if o.breaker.on() {
			printBreaker(stderr, st)
		}
	}
	return code
}

// window is how many lines fetch keeps between submitted and written: room
// for every worker and the whole queue. A smaller one would stall behind
// any slow request at its head (one waiting out a Retry-After, say) while
// the workers sit idle.
func (o *fetchOptions) window() int {
	queue := o.queue
	if queue == 0 {
		queue = engine.DefaultQueueSize
	}
	return o.concurrency + queue
}

// parseFlags parses args; done is true when the command should exit with
// code (help, or a usage error, which it reports).
func parseFlags(fs *pflag.FlagSet, args []string, stderr io.Writer) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, false
	case err == pflag.ErrHelp:
		return exitOK, true
	default:
		fmt.Fprintf(stderr, "courier %s: %v\nRun 'courier %s --help' for usage.\n", fs.Name(), err, fs.Name())
		return exitUsage, true
	}
}

// config turns the flags and the environment into an engine config.
func (o *fetchOptions) config(stderr io.Writer) (engine.Config, error) {
	cfg := engine.Config{
		BaseURL: o.baseURL, Workers: o.concurrency, QueueSize: o.queue, Timeout: o.timeout,
		RateLimit: engine.RateLimit{PerSecond: o.rate, Burst: o.burst},
		Retry:     engine.Retry{MaxAttempts: o.maxAttempts},
		Dedup:     engine.Dedup{Disabled: o.noDedup},
		Headers:   http.Header{},
	}
	if err := checkBaseURL(o.baseURL); err != nil {
		return cfg, err
	}
	if err := o.checkNumbers(); err != nil {
		return cfg, err
	}
	if err := o.crawl.check(); err != nil {
		return cfg, err
	}
	if o.maxAttempts < 1 {
		return cfg, fmt.Errorf("--max-attempts must be at least 1, got %d", o.maxAttempts)
	}
	if o.timeout <= 0 {
		return cfg, fmt.Errorf("--timeout must be positive, got %s", o.timeout)
	}
	if err := o.limits.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := o.rates.apply(&cfg); err != nil {
		return cfg, err
	}
	if err := o.breaker.apply(&cfg); err != nil {
		return cfg, err
	}
	for _, h := range o.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return cfg, fmt.Errorf("--header %q: want 'Key: Value'", h)
		}
		cfg.Headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if len(cfg.Headers) > 0 {
		// -H is how fetch sends a key that is not a Bearer token: every one
		// is kept off other origins when a redirect leaves the base URL's.
		cfg.SensitiveHeaders = slices.Clone(engine.DefaultSensitiveHeaders)
		for k := range cfg.Headers {
			cfg.SensitiveHeaders = append(cfg.SensitiveHeaders, k)
		}
	}
	if o.logLevel != "off" {
		lvl, err := zerolog.ParseLevel(o.logLevel)
		if err != nil || o.logLevel == "" {
			return cfg, fmt.Errorf("--log-level %q: want off, error, warn, info or debug", o.logLevel)
		}
		l := zerolog.New(stderr).Level(lvl).With().Timestamp().Logger()
		cfg.Logger = &l
	}

	if err := o.auth(&cfg.Auth, stderr); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// result is one output line.
type result struct {
	Line int             `json:"line"`
	ID   json.RawMessage `json:"id"`
	// Page is the page's number, from 1, with --paginate; 0 otherwise.
	Page       int     `json:"page,omitempty"`
	Method     string  `json:"method"`
	Path       string  `json:"path"`
	Status     int     `json:"status"`
	Attempts   int     `json:"attempts"`
	DurationMS float64 `json:"duration_ms"`
	// Cache is "hit" or "revalidated" when --cache served the body.
	Cache string `json:"cache,omitempty"`
	Body  any    `json:"body"`
	// BodyBase64 holds a body that is not valid UTF-8 (binary, or text in
	// another encoding), base64-encoded; Body is then null.
	BodyBase64 []byte `json:"body_base64,omitempty"`
	Error      string `json:"error,omitempty"`
	// Next is the next page's URL, for the checkpoint of a resumable
	// pagination (see checkpointLine); "" when the line is done.
	Next string `json:"-"`
}

type lineMeta struct {
	in    inputLine
	start time.Time
}

// inFlight is a line submitted and not yet written.
type inFlight struct {
	meta lineMeta
	f    *engine.Future
	done <-chan struct{} // f.Done()
	sent *sentTrace      // whether the request went out
}

// inFlightQueue is fetch's window: the lines submitted and not yet
// written, oldest first.
type inFlightQueue struct {
	items []inFlight
	head  int // items[head:] are queued
}

func (q *inFlightQueue) len() int         { return len(q.items) - q.head }
func (q *inFlightQueue) front() *inFlight { return &q.items[q.head] }

func (q *inFlightQueue) push(l inFlight) {
	if q.head > 0 && q.head >= len(q.items)/2 {
		// Reuse the room popped at the front.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, l)
}

func (q *inFlightQueue) pop() {
	q.items[q.head] = inFlight{}
	q.head++
}

// fetch runs every input line through e and writes the results in input
// order, each as soon as it and every line before it are done. At most
// window lines are between submitted and written. sum receives the counts
// and latencies. When ctx ends (a signal), fetch stops reading, cancels
// what is pending, writes every result it has, in order (a cancelled
// request's line says it was interrupted), and returns the signal's exit
// status, unless the batch had already finished.
//
// One goroutine, the caller's, submits, waits and writes. Each time it
// wakes it writes every done result at the head of the window, flushes
// them out in one write, submits the lines read while the window has room,
// and only then waits: for the head's answer, more input, or the end of
// ctx. So nothing done waits in the buffer while fetch waits, and lines
// that finish together go out together.
func fetch(ctx context.Context, e *engine.Engine, src *input, out io.Writer, window int, bar *progress, sum *summary) (int, error) {
	defer src.Stop()
	// Requests end with fetch, on an error too.
	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		q       inFlightQueue
		batch   []rawLine              // read, not submitted yet
		lines   = src.lines            // nil once every line is read or ctx ended
		stopped = ctx.Done()           // nil once ctx ended
		eof     bool                   // every input line was read
		cut     bool                   // a request was cancelled by the end of ctx
		enc     resultEncoder          // encodes result lines
		w       = bufio.NewWriter(out) // holds the lines written since the last wait
	)
	code := exitOK
	start := time.Now()
	for {
		wrote := false
		for q.len() > 0 && isClosed(q.front().done) {
			m, f, sent := q.front().meta, q.front().f, q.front().sent
			q.pop()
			resp, err := f.Await(context.Background()) // resolved: returns at once
			r := describe(m, engine.Result{Response: resp, Err: err})
			if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
				cut = true
				r.Error = fmt.Sprintf("line %d: interrupted (%v) before an answer came", m.in.n, context.Cause(ctx))
			}
			code = sum.count(&r, err, code, sent.wrote.Load())
			line, err := enc.encode(&r, false, "")
			if err == nil {
				_, err = w.Write(line)
			}
			if err != nil {
				return exitFailed, fmt.Errorf("writing results: %w", err)
			}
			bar.add()
			wrote = true
		}
		if wrote {
			if err := w.Flush(); err != nil {
				return exitFailed, fmt.Errorf("writing results: %w", err)
			}
		}
		for len(batch) > 0 && q.len() < window {
			raw := batch[0]
			batch[0] = rawLine{}
			batch = batch[1:]
			line, skip := src.parse(raw)
			if skip {
				continue
			}
			m := lineMeta{in: line, start: time.Now()}
			sent := newSentTrace()
			f := e.Submit(sent.context(reqCtx), line.req)
			q.push(inFlight{meta: m, f: f, done: f.Done(), sent: sent})
		}
		if lines == nil && len(batch) == 0 && q.len() == 0 {
			break
		}
		var more <-chan []rawLine // nil while the window is full
		if len(batch) == 0 {
			more = lines
		}
		var head <-chan struct{}
		if q.len() > 0 {
			head = q.front().done
		}
		select {
		case b, ok := <-more:
			if !ok {
				eof, lines = true, nil
			}
			batch = b
		case <-head:
		case <-stopped:
			// Read no more; what is pending ends with ctx, and is written.
			stopped, lines, batch = nil, nil, nil
		}
	}
	sum.elapsed = time.Since(start)
	if eof && !cut {
		// The whole batch ran; a signal after that changes nothing.
		if err := src.Err(); err != nil {
			return exitFailed, err
		}
		return code, nil
	}
	src.Stop()
	if ctx.Err() == nil {
		// After a signal, its status wins over a read error.
		if err := src.Err(); err != nil {
			return exitFailed, err
		}
	}
	return interrupted(ctx)
}

// isClosed reports whether c is closed, without waiting.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// interrupted is fetch's status and error when ctx ended before the batch
// did: the signal's status (130, 143), or 1 for any other end.
func interrupted(ctx context.Context) (int, error) {
	if sig, ok := stoppedBy(ctx); ok {
		return sig.exitCode(), sig
	}
	return exitFailed, fmt.Errorf("interrupted: %w", context.Cause(ctx))
}

// describe turns a result into its output line.
func describe(m lineMeta, res engine.Result) result {
	r := result{Line: m.in.n, ID: m.in.id, Method: m.in.method, Path: m.in.path}
	if r.ID == nil {
		r.ID = json.RawMessage("null")
	}
	resp, err := res.Response, res.Err
	if resp != nil {
		r.Status, r.Attempts = resp.Status, resp.Attempts
		if resp.Cache.FromCache() {
			r.Cache = string(resp.Cache)
		}
		r.DurationMS = float64(resp.Duration.Microseconds()) / 1000
		if len(resp.Body) > 0 {
			// Every output line is valid JSON, whatever the server sent:
			// json.Valid alone lets invalid UTF-8 inside strings through.
			switch {
			case !utf8.Valid(resp.Body):
				r.BodyBase64 = resp.Body
			case json.Valid(resp.Body):
				r.Body = json.RawMessage(resp.Body)
			default:
				r.Body = string(resp.Body)
			}
		}
	} else {
		r.DurationMS = float64(time.Since(m.start).Microseconds()) / 1000
	}
	if err != nil {
		r.Error = err.Error()
		var he *errors.HTTPError
		var re *errors.RequestError
		switch {
		case errors.Is(err, errors.ErrCircuitOpen):
			// Refused unsent: the answer it wraps was another line's.
			if errors.As(err, &re) {
				r.Attempts = re.Attempts
			}
		case errors.As(err, &he):
			r.Status, r.Attempts = he.Status, he.Attempts
		case errors.As(err, &re):
			r.Attempts = re.Attempts
		}
	}
	return r
}
