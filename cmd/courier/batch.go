package main

// Batches on Redis: `courier fetch --redis URL --batch NAME [FILE]`, and
// `courier batch status|rm`. The batch itself (streams, leases, takeover,
// first result wins) is fleet.Batch; this file turns input lines into its
// lines and its lines into requests and result lines.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/requests"
)

// batchOptions are fetch's flags for batches on Redis.
type batchOptions struct {
	redis        redisFlags
	name         string
	lease        time.Duration
	waitForBatch bool
}

func batchFlags(fs *pflag.FlagSet, o *batchOptions) {
	o.redis.flags(fs, "fleet mode: the processes that name one Redis (and --fleet) share one session and one set of rate limits; redis://, rediss:// or unix:// URL, the password from COURIER_REDIS_PASSWORD (never in the URL on a shared machine: argv is public)")
	fs.StringVar(&o.name, "batch", "", "with --redis: work on this batch of the fleet; with FILE, add FILE's lines to it first")
	fs.BoolVar(&o.waitForBatch, "wait-for-batch", false, "with --batch and no FILE: wait for the batch to be made, rather than fail when it does not exist")
	fs.DurationVar(&o.lease, "lease", fleet.DefaultLease, "with --batch: how long a worker holds a line without renewing it before others take it over")
}

// wanted reports whether fetch works on a batch.
func (o *batchOptions) wanted() bool { return o.name != "" }

// batchKey is the Idempotency-Key of line n of a batch: the same for every
// worker and every run.
func batchKey(batch string, n int, hash string) string {
	h := sha256.Sum256([]byte("courier batch\x00" + batch + "\x00" + strconv.Itoa(n) + "\x00" + hash))
	return "courier-" + hex.EncodeToString(h[:16])
}

// batchError words a batch's error for the command line: a batch that
// does not exist, or whose keys are gone, says what to do.
func batchError(err error, fleetName string) string {
	switch {
	case errors.Is(err, fleet.ErrNoBatch):
		return fmt.Sprintf("%v; a batch is made by courier fetch --batch NAME FILE, in the fleet of the same --fleet (here %s), or of the same --base-url and COURIER_CLIENT_ID; a worker started before it is made waits with --wait-for-batch", err, fleetName)
	case errors.Is(err, fleet.ErrBatchGone):
		return fmt.Sprintf("%v: its lines and results are lost; run Redis with maxmemory-policy noeviction, and add the batch again", err)
	}
	return err.Error()
}

// warnEviction warns when Redis may evict the batch's keys.
func warnEviction(ctx context.Context, rdb *redis.Client, cmd string, stderr io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, fleet.DefaultReadTimeout)
	defer cancel()
	if policy, risky, err := fleet.EvictionRisk(ctx, rdb); err == nil && risky {
		fmt.Fprintf(stderr, "courier %s: warning: redis runs with maxmemory-policy %s, which can evict the batch's keys (they have a TTL) when it is full, losing its lines and results; run it with maxmemory-policy noeviction\n", cmd, policy)
	}
}

// runBatchFetch is `courier fetch --redis URL --batch NAME [FILE]`. fm is
// the fleet the worker is part of: the batch is that fleet's.
func runBatchFetch(ctx context.Context, o *fetchOptions, fs *pflag.FlagSet, cfg engine.Config, fm *fleetMode, p *lineParser, stdin io.Reader, stderr io.Writer) int {
	fail := failer(stderr, "fetch", false)
	switch {
	case o.out != "" || o.resume.resume || o.resume.resumeFailed:
		return fail(exitUsage, "--batch keeps its results in Redis: read them with courier collect, not --out or --resume")
	case o.batch.lease < 30*time.Millisecond:
		return fail(exitUsage, "--lease must be at least 30ms, got %s", o.batch.lease)
	case fm == nil:
		return fail(exitUsage, "--redis URL is required")
	case o.batch.waitForBatch && fs.NArg() == 1:
		return fail(exitUsage, "--wait-for-batch is for a worker that joins a batch; with FILE this one makes it")
	}
	b, err := fleet.OpenFleetBatch(fm.rdb, fm.name, o.batch.name, fleet.BatchOptions{BaseURL: cfg.BaseURL})
	if err != nil {
		return fail(exitUsage, "--batch %q: %v", o.batch.name, err)
	}
	warnEviction(ctx, fm.rdb, "fetch", stderr)

	if fs.NArg() == 1 {
		in := stdin
		if fs.Arg(0) != "-" {
			f, err := os.Open(fs.Arg(0))
			if err != nil {
				return fail(exitUsage, "input: %v", err)
			}
			defer f.Close()
			in = f
		}
		n, err := addLines(ctx, b, in, int(o.limits.maxLine), o.resume.idempotencyKeys)
		if err != nil {
			code := exitFailed
			if errors.As(err, new(*fleet.ChangedError)) || errors.As(err, new(*fleet.BaseURLError)) {
				code = exitUsage
			}
			return fail(code, "%v", err)
		}
		if o.summary {
			fmt.Fprintf(stderr, "batch %s: %d lines in the batch\n", b.Name(), n)
		}
	}
	keys := o.resume.idempotencyKeys
	e, err := engine.New(cfg)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	defer e.Close()

	workCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		expiredOnce sync.Once
		expired     bool // written once, under expiredOnce; read after Work
	)
	var sum summary
	var sumMu sync.Mutex // protects sum
	// skip reports whether a request's error leaves the line to another
	// worker rather than answering it.
	skip := func(ctx context.Context, err error) bool {
		switch {
		case err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled):
			return true // stopping: another worker will do it
		case errors.Is(err, errors.ErrSessionExpired):
			// This worker's tokens are no good; others may have good ones.
			expiredOnce.Do(func() { expired = true; stop() })
			return true
		}
		return false
	}
	count := func(res *result, err error) {
		sumMu.Lock()
		sum.add(res, err, exitOK) // the exit status comes from the batch's counts
		sumMu.Unlock()
	}
	handle := func(ctx context.Context, l fleet.Line, pg *fleet.Pager) fleet.Outcome {
		line, _ := p.parse(l.N, l.Text)
		if line.req == nil { // a line Add would not have taken
			line.req = requests.New("GET", "/")
			line.req.Fail(fmt.Errorf("line %d: not a request", l.N))
		}
		if keys || l.IdempotencyKeys {
			setIdempotencyKey(&line, batchKey(b.Name(), l.N, l.Hash))
		}
		start := time.Now()
		if o.crawl.strategy != nil && line.err == nil {
			return crawlBatchLine(ctx, e, &o.crawl, lineMeta{in: line, start: start}, l.Hash, pg, skip, count)
		}
		resp, err := e.Do(ctx, line.req)
		if skip(ctx, err) {
			return fleet.Outcome{Skip: true}
		}
		res := describe(lineMeta{in: line, start: start}, engine.Result{Response: resp, Err: err})
		data, jerr := marshalResult(checkpointLine{result: res, Hash: l.Hash})
		if jerr != nil {
			res = result{Line: res.Line, ID: res.ID, Method: res.Method, Path: res.Path, Status: res.Status, Error: "encoding the result: " + jerr.Error()}
			data, _ = marshalResult(checkpointLine{result: res, Hash: l.Hash})
		}
		count(&res, err)
		return fleet.Outcome{Data: data, Failed: res.Error != ""}
	}

	bar := newProgress(fs, o.progress, -1, stderr, "batch "+b.Name())
	follow := followBatch(workCtx, b, bar)
	start := time.Now()
	var reportMu sync.Mutex // one report line at a time
	concurrency := o.concurrency
	if o.crawl.strategy != nil {
		// As a local crawl: lines at once, each with its window of pages
		// ahead, never more pages together than --concurrency.
		concurrency, o.crawl.window = crawlLines(o.concurrency)
	}
	ws, werr := b.WorkPages(workCtx, fleet.WorkerOptions{
		Concurrency: concurrency, Lease: o.batch.lease, WaitForBatch: o.batch.waitForBatch,
		OnStoreError: func(line int, err error) {
			reportMu.Lock()
			defer reportMu.Unlock()
			fmt.Fprintf(stderr, "courier fetch: batch %s: line %d: the result could not be stored (%v); the line is released for another try\n", b.Name(), line, err)
		},
	}, handle)
	follow()
	bar.done()
	sum.elapsed = time.Since(start)

	st, err := b.Status(context.WithoutCancel(ctx))
	if o.summary {
		sum.print(stderr, e.Stats())
		fmt.Fprintf(stderr, "this worker stored %d results, took over %d lines, lost %d races\n", ws.Stored, ws.TakenOver, ws.Late)
		if ws.NotStored > 0 {
			fmt.Fprintf(stderr, "this worker could not store %d results; their lines were released\n", ws.NotStored)
		}
		if err == nil {
			printBatchCounts(stderr, b.Name(), st)
		}
	}
	switch {
	case expired:
		return fail(exitExpired, "session expired: this worker stopped; the batch goes on with the others")
	case werr != nil && ctx.Err() != nil:
		return fail(exitFailed, "interrupted: %v", ctx.Err())
	case werr != nil && (errors.As(werr, new(*fleet.BaseURLError)) || errors.Is(werr, fleet.ErrNoBatch)):
		return fail(exitUsage, "%s", batchError(werr, fm.name))
	case werr != nil:
		return fail(exitFailed, "%s", batchError(werr, fm.name))
	case err != nil:
		return fail(exitFailed, "%v", err)
	case st.Failed > 0:
		return exitFailed
	}
	return exitOK
}

// crawlBatchLine crawls one line of a batch with --paginate: it carries
// on after the pages the line's earlier workers stored (from the next
// page's URL stored with the last), stores each page but the last with
// the URL of the one after it, and returns the last as the line's result.
// Each page is the output line a local crawl writes to its checkpoint.
// skip says whether an error leaves the line to another worker; count
// adds a page to the summary.
func crawlBatchLine(ctx context.Context, e *engine.Engine, o *crawlOptions, m lineMeta, hash string, pg *fleet.Pager,
	skip func(context.Context, error) bool, count func(*result, error)) fleet.Outcome {
	stored, state, err := pg.Resume(ctx)
	if err != nil {
		return fleet.Outcome{Skip: true} // Redis away: the line waits for a worker that can read it
	}
	first := m.in.req
	if stored > 0 {
		if len(state) == 0 {
			// The last page stored ended the crawl but for an error that
			// a worker died before storing: the line is done.
			return fleet.Outcome{}
		}
		first = resumeAt(first, string(state))
	}
	max := 0
	if o.maxPages > 0 {
		if max = o.maxPages - stored; max <= 0 {
			return fleet.Outcome{}
		}
	}
	p := o.strategy(max)
	var enc resultEncoder
	i := 0
	for resp, err := range e.Pages(ctx, first, p) {
		if skip(ctx, err) {
			return fleet.Outcome{Skip: true}
		}
		i++
		page := newPage(p, resp, err, i, max)
		r := pageResult(m, page, stored+i)
		data, jerr := enc.encode(&r, true, hash)
		if jerr != nil {
			r = result{Line: r.Line, ID: r.ID, Page: r.Page, Method: r.Method, Path: r.Path, Status: r.Status, Next: r.Next,
				Error: "encoding the result: " + jerr.Error()}
			data, _ = enc.encode(&r, true, hash)
		}
		data = data[:len(data)-1] // the newline
		count(&r, err)
		if !page.more {
			return fleet.Outcome{Data: data, Failed: r.Error != ""}
		}
		if err := pg.Store(ctx, data, []byte(page.next)); err != nil {
			return fleet.Outcome{Skip: true} // the line is another worker's now, or Redis is away
		}
		m.start = time.Now()
	}
	// The crawl ended on a page stored already (its plan ran out).
	return fleet.Outcome{}
}

func marshalResult(v any) ([]byte, error) {
	var buf strings.Builder
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return []byte(strings.TrimSuffix(buf.String(), "\n")), nil
}

// addLines adds every request line of in to the batch and seals it. It
// returns how many lines the batch has. A line over maxLine is an error:
// a batch's lines are kept whole in Redis.
func addLines(ctx context.Context, b *fleet.Batch, in io.Reader, maxLine int, keys bool) (int, error) {
	lr := newLineReader(in, maxLine)
	var chunk []fleet.Line
	total := 0
	for n := 1; ; n++ {
		raw, tooLong, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("reading input after line %d: %w", n-1, err)
		}
		if tooLong {
			return 0, fmt.Errorf("input line %d is longer than --max-line (%s)", n, byteSize(maxLine))
		}
		text := string(raw)
		if blankOrComment(text) {
			continue
		}
		chunk = append(chunk, fleet.Line{N: n, Text: text, Hash: lineHash(text)})
		total++
		if len(chunk) == 5000 {
			if err := b.Add(ctx, chunk, keys); err != nil {
				return 0, err
			}
			chunk = chunk[:0]
		}
	}
	if err := b.Add(ctx, chunk, keys); err != nil {
		return 0, err
	}
	return total, b.Seal(ctx, total)
}

// followBatch moves bar with the batch's counters, which every worker
// moves, until the returned stop is called.
func followBatch(ctx context.Context, b *fleet.Batch, bar *progress) (stop func()) {
	if bar.bar == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if st, err := b.Status(ctx); err == nil && st.Exists {
				bar.set(st.Done, st.Total, st.Sealed)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// set shows done of total (a spinner with a count while total is not
// final).
func (p *progress) set(done, total int64, final bool) {
	if p.bar == nil {
		return
	}
	if final {
		p.bar.ChangeMax64(total)
	}
	_ = p.bar.Set64(done)
}

func printBatchCounts(w io.Writer, name string, st fleet.Status) {
	lines := strconv.FormatInt(st.Total, 10)
	if !st.Sealed {
		lines += " so far (lines are still being added)"
	}
	fmt.Fprintf(w, "batch       %s\n", name)
	if st.BaseURL != "" {
		fmt.Fprintf(w, "base URL    %s\n", st.BaseURL)
	}
	fmt.Fprintf(w, "lines       %s\n", lines)
	fmt.Fprintf(w, "done        %d\n", st.Done)
	fmt.Fprintf(w, "failed      %d\n", st.Failed)
	fmt.Fprintf(w, "pending     %d\n", st.Total-st.Done)
	fmt.Fprintf(w, "in flight   %d\n", st.InFlight)
	if st.Malformed > 0 {
		fmt.Fprintf(w, "malformed   %d (stream entries that are not lines, skipped)\n", st.Malformed)
	}
	fmt.Fprintf(w, "workers     %d", len(st.Workers))
	if len(st.Workers) > 0 {
		fmt.Fprintf(w, ": %s", strings.Join(st.Workers, ", "))
	}
	fmt.Fprintln(w)
}

const batchUsage = `Usage:
  courier batch status --redis URL [--fleet NAME | --base-url URL] NAME   done, pending and failed lines, and the live workers
  courier batch rm --redis URL (--fleet NAME | --base-url URL) NAME       delete the batch and its results

A batch is made and worked by courier fetch --redis URL --batch NAME [FILE],
and read by courier collect --redis URL --batch NAME. It belongs to its
fleet: name it with --fleet, or with the --base-url (and COURIER_CLIENT_ID)
that fetch derives the fleet's name from. Without either, status finds the
batch when one fleet alone has a batch of that name; rm always needs one.

Flags:
`

// batchTarget is the flags of collect and batch that name a batch.
type batchTarget struct {
	redis          redisFlags
	fleet, baseURL string
}

func (t *batchTarget) flags(fs *pflag.FlagSet) {
	t.redis.flags(fs, "Redis URL (the password from COURIER_REDIS_PASSWORD)")
	fs.StringVar(&t.fleet, "fleet", "", "the batch's fleet, as given to courier fetch --fleet")
	fs.StringVar(&t.baseURL, "base-url", "", "instead of --fleet: the --base-url of the batch's workers (with COURIER_CLIENT_ID), from which fetch derives their fleet's name")
}

// open connects and opens the batch name. Without --fleet or --base-url,
// and unless mustName, it looks for the fleet that has a batch of that
// name, and fails when none or several have one.
//
// what is the flag or argument that gave the name, for the errors.
func (t *batchTarget) open(ctx context.Context, cmd, what, name string, mustName bool, stderr io.Writer) (*fleet.Batch, string, func(), error) {
	if err := t.redis.check(); err != nil {
		return nil, "", nil, err
	}
	if _, err := fleet.OpenBatch(nil, name); err != nil { // checks the name only
		return nil, "", nil, fmt.Errorf("%s %q: %v", what, name, err)
	}
	fleetName, err := fleetName(t.fleet, t.baseURL)
	if err != nil {
		return nil, "", nil, err
	}
	if fleetName == "" && mustName {
		return nil, "", nil, fmt.Errorf("--fleet NAME or --base-url URL is required: batches belong to a fleet")
	}
	rdb, err := t.redis.connect(cmd, stderr)
	if err != nil {
		return nil, "", nil, err
	}
	if fleetName == "" {
		fleetName, err = findFleet(ctx, rdb, name)
		if err != nil {
			rdb.Close()
			return nil, "", nil, err
		}
	}
	b, err := fleet.OpenFleetBatch(rdb, fleetName, name, fleet.BatchOptions{})
	if err != nil {
		rdb.Close()
		return nil, "", nil, err
	}
	return b, fleetName, func() { rdb.Close() }, nil
}

// errNoFleetBatch is findFleet's error when no fleet has the batch.
var errNoFleetBatch = errors.New("no fleet on this Redis has a batch of that name")

// findFleet finds the one fleet with a batch of that name.
func findFleet(ctx context.Context, rdb *redis.Client, name string) (string, error) {
	var fleets []string
	suffix := ":batch:" + name + ":meta"
	iter := rdb.Scan(ctx, 0, "courier:{*}"+suffix, 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		open, end := strings.IndexByte(k, '{'), strings.IndexByte(k, '}')
		if open >= 0 && end > open && k[end+1:] == suffix {
			fleets = append(fleets, k[open+1:end])
		}
	}
	if err := iter.Err(); err != nil {
		return "", fmt.Errorf("looking for batch %s: %v", name, err)
	}
	switch len(fleets) {
	case 0:
		return "", fmt.Errorf("no batch %s: %w (give its --fleet to wait for it)", name, errNoFleetBatch)
	case 1:
		return fleets[0], nil
	}
	return "", fmt.Errorf("fleets %s each have a batch %s; say which with --fleet", strings.Join(fleets, ", "), name)
}

// runBatchCmd is `courier batch status|rm`.
func runBatchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("batch", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, batchUsage); fs.PrintDefaults() }
	var target batchTarget
	target.flags(fs)
	force := fs.Bool("force", false, "rm: remove a batch that is not finished and has live workers")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	fail := failer(stderr, "batch", true)
	if fs.NArg() != 2 || (fs.Arg(0) != "status" && fs.Arg(0) != "rm") {
		return fail(exitUsage, "want status NAME or rm NAME, got %q", fs.Args())
	}
	b, fleetName, closeRedis, err := target.open(ctx, "batch", "NAME", fs.Arg(1), fs.Arg(0) == "rm", stderr)
	if errors.Is(err, errNoFleetBatch) {
		return fail(exitFailed, "%v", err)
	}
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	defer closeRedis()
	st, err := b.Status(ctx)
	if err != nil {
		return fail(exitFailed, "%v", err)
	}
	if !st.Exists {
		return fail(exitFailed, "no batch %s in fleet %s", b.Name(), fleetName)
	}
	if fs.Arg(0) == "status" {
		fmt.Fprintf(stdout, "fleet       %s\n", fleetName)
		printBatchCounts(stdout, b.Name(), st)
		return exitOK
	}
	if !st.Finished() && len(st.Workers) > 0 && !*force {
		return fail(exitFailed, "batch %s is not finished and %d workers are on it; --force removes it anyway", b.Name(), len(st.Workers))
	}
	if err := b.Remove(ctx); err != nil {
		return fail(exitFailed, "%v", err)
	}
	fmt.Fprintf(stdout, "removed batch %s of fleet %s (%d of %d lines done)\n", b.Name(), fleetName, st.Done, st.Total)
	return exitOK
}
