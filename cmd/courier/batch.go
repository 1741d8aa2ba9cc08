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

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/requests"
)

// batchOptions are fetch's flags for batches on Redis.
type batchOptions struct {
	redisURL, name string
	lease          time.Duration
}

func batchFlags(fs *pflag.FlagSet, o *batchOptions) {
	fs.StringVar(&o.redisURL, "redis", "", "fleet mode: the processes that name one Redis (and --fleet) share one session and one set of rate limits; redis://, rediss:// or unix:// URL, the password from COURIER_REDIS_PASSWORD or the URL")
	fs.StringVar(&o.name, "batch", "", "with --redis: work on this batch; with FILE, add FILE's lines to it first")
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

// openBatch connects to the batch named on the command line by what
// (the flag or argument that gave its name, for the errors).
func openBatch(redisURL, name, what string) (*fleet.Batch, func(), error) {
	if redisURL == "" {
		return nil, nil, fmt.Errorf("--redis URL is required")
	}
	rdb, err := fleet.NewClient(redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis: %v", err)
	}
	b, err := fleet.OpenBatch(rdb, name)
	if err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("%s %q: %v", what, name, err)
	}
	return b, func() { rdb.Close() }, nil
}

// runBatchFetch is `courier fetch --redis URL --batch NAME [FILE]`.
func runBatchFetch(ctx context.Context, o *fetchOptions, fs *pflag.FlagSet, cfg engine.Config, p *lineParser, stdin io.Reader, stderr io.Writer) int {
	fail := failer(stderr, "fetch", false)
	switch {
	case o.out != "" || o.resume.resume || o.resume.resumeFailed:
		return fail(exitUsage, "--batch keeps its results in Redis: read them with courier collect, not --out or --resume")
	case o.batch.lease < 30*time.Millisecond:
		return fail(exitUsage, "--lease must be at least 30ms, got %s", o.batch.lease)
	}
	b, closeRedis, err := openBatch(o.batch.redisURL, o.batch.name, "--batch")
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	defer closeRedis()

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
			if errors.As(err, new(*fleet.ChangedError)) {
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
	handle := func(ctx context.Context, l fleet.Line) fleet.Outcome {
		line, _ := p.parse(l.N, l.Text)
		if line.req == nil { // a line Add would not have taken
			line.req = requests.New("GET", "/")
			line.req.Fail(fmt.Errorf("line %d: not a request", l.N))
		}
		if keys || l.IdempotencyKeys {
			setIdempotencyKey(&line, batchKey(b.Name(), l.N, l.Hash))
		}
		start := time.Now()
		resp, err := e.Do(ctx, line.req)
		switch {
		case err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled):
			return fleet.Outcome{Skip: true} // stopping: another worker will do it
		case errors.Is(err, errors.ErrSessionExpired):
			// This worker's tokens are no good; others may have good ones.
			expiredOnce.Do(func() { expired = true; stop() })
			return fleet.Outcome{Skip: true}
		}
		res := describe(lineMeta{in: line, start: start}, engine.Result{Response: resp, Err: err})
		data, jerr := marshalResult(checkpointLine{result: res, Hash: l.Hash})
		if jerr != nil {
			res = result{Line: res.Line, ID: res.ID, Method: res.Method, Path: res.Path, Status: res.Status, Error: "encoding the result: " + jerr.Error()}
			data, _ = marshalResult(checkpointLine{result: res, Hash: l.Hash})
		}
		sumMu.Lock()
		sum.add(&res, err, exitOK) // the exit status comes from the batch's counts
		sumMu.Unlock()
		return fleet.Outcome{Data: data, Failed: res.Error != ""}
	}

	bar := newProgress(fs, o.progress, -1, stderr, "batch "+b.Name())
	follow := followBatch(workCtx, b, bar)
	start := time.Now()
	ws, werr := b.Work(workCtx, fleet.WorkerOptions{Concurrency: o.concurrency, Lease: o.batch.lease}, handle)
	follow()
	bar.done()
	sum.elapsed = time.Since(start)

	st, err := b.Status(context.WithoutCancel(ctx))
	if o.summary {
		sum.print(stderr, e.Stats())
		fmt.Fprintf(stderr, "this worker stored %d results, took over %d lines, lost %d races\n", ws.Stored, ws.TakenOver, ws.Late)
		if err == nil {
			printBatchCounts(stderr, b.Name(), st)
		}
	}
	switch {
	case expired:
		return fail(exitExpired, "session expired: this worker stopped; the batch goes on with the others")
	case werr != nil && ctx.Err() != nil:
		return fail(exitFailed, "interrupted: %v", ctx.Err())
	case werr != nil:
		return fail(exitFailed, "%v", werr)
	case err != nil:
		return fail(exitFailed, "%v", err)
	case st.Failed > 0:
		return exitFailed
	}
	return exitOK
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
	fmt.Fprintf(w, "lines       %s\n", lines)
	fmt.Fprintf(w, "done        %d\n", st.Done)
	fmt.Fprintf(w, "failed      %d\n", st.Failed)
	fmt.Fprintf(w, "pending     %d\n", st.Total-st.Done)
	fmt.Fprintf(w, "in flight   %d\n", st.InFlight)
	fmt.Fprintf(w, "workers     %d", len(st.Workers))
	if len(st.Workers) > 0 {
		fmt.Fprintf(w, ": %s", strings.Join(st.Workers, ", "))
	}
	fmt.Fprintln(w)
}

const batchUsage = `Usage:
  courier batch status --redis URL NAME   done, pending and failed lines, and the live workers
  courier batch rm --redis URL NAME       delete the batch and its results

A batch is made and worked by courier fetch --redis URL --batch NAME [FILE],
and read by courier collect --redis URL --batch NAME.

Flags:
`

// runBatchCmd is `courier batch status|rm`.
func runBatchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("batch", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, batchUsage); fs.PrintDefaults() }
	redisURL := fs.String("redis", "", "Redis URL (the password from COURIER_REDIS_PASSWORD)")
	force := fs.Bool("force", false, "rm: remove a batch that is not finished and has live workers")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	fail := failer(stderr, "batch", true)
	if fs.NArg() != 2 || (fs.Arg(0) != "status" && fs.Arg(0) != "rm") {
		return fail(exitUsage, "want status NAME or rm NAME, got %q", fs.Args())
	}
	b, closeRedis, err := openBatch(*redisURL, fs.Arg(1), "NAME")
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	defer closeRedis()
	st, err := b.Status(ctx)
	if err != nil {
		return fail(exitFailed, "%v", err)
	}
	if !st.Exists {
		return fail(exitFailed, "no batch %s", b.Name())
	}
	if fs.Arg(0) == "status" {
		printBatchCounts(stdout, b.Name(), st)
		return exitOK
	}
	if !st.Finished() && len(st.Workers) > 0 && !*force {
		return fail(exitFailed, "batch %s is not finished and %d workers are on it; --force removes it anyway", b.Name(), len(st.Workers))
	}
	if err := b.Remove(ctx); err != nil {
		return fail(exitFailed, "%v", err)
	}
	fmt.Fprintf(stdout, "removed batch %s (%d of %d lines done)\n", b.Name(), st.Done, st.Total)
	return exitOK
}
