package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
)

const collectUsage = `Usage: courier collect --redis URL [--fleet NAME | --base-url URL] --batch NAME [--out FILE] [--wait]

Writes the results of a batch on Redis in input order, as the JSON Lines
courier fetch --resume writes (with --paginate, a line per page, in page
order), each as soon as it and every line before it
are done. Without --wait it stops at the first line not done yet; with
--wait it follows the batch to its end. Exit status: 0 when every line is
written and got a 2xx, 1 when some failed or (without --wait) the batch is
not finished, 2 for a usage error.

The batch is its fleet's: name the fleet with --fleet, or with the
--base-url (and COURIER_CLIENT_ID) of the batch's workers. Without either,
collect finds the fleet that has a batch of that name (there must be one
only); to wait for a batch not made yet, name its fleet.

Flags:
`

// collectPoll is how often collect --wait looks for new results.
const collectPoll = 200 * time.Millisecond

// runCollect is `courier collect`.
func runCollect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("collect", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, collectUsage); fs.PrintDefaults() }
	var target batchTarget
	target.flags(fs)
	name := fs.String("batch", "", "the batch (required)")
	out := fs.String("out", "", "write results to this file instead of stdout")
	wait := fs.Bool("wait", false, "follow the batch until every line is done")
	var showProgress bool
	progressFlag(fs, &showProgress)
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	fail := failer(stderr, "collect", true)
	if *name == "" {
		return fail(exitUsage, "--batch NAME is required")
	}
	if fs.NArg() > 0 {
		return fail(exitUsage, "no arguments are taken, got %q", fs.Args())
	}
	b, fleetName, closeRedis, err := target.open(ctx, "collect", "--batch", *name, false, stderr)
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
	if !st.Exists && !*wait {
		return fail(exitFailed, "no batch %s in fleet %s", b.Name(), fleetName)
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return fail(exitUsage, "--out: %v", err)
		}
		defer f.Close()
		w = f
	}
	bar := newProgress(fs, showProgress, -1, stderr, "collecting "+b.Name())
	n, err := collect(ctx, b, w, *wait, st.Exists, bar)
	bar.done()
	if err != nil {
		return fail(exitFailed, "%v (%d lines written)", err, n)
	}
	st, err = b.Status(ctx)
	switch {
	case err != nil:
		return fail(exitFailed, "%v", err)
	case int64(n) < st.Total || !st.Sealed:
		return fail(exitFailed, "batch %s is not finished: %d of %d lines written", b.Name(), n, st.Total)
	case st.Failed > 0:
		return exitFailed
	}
	return exitOK
}

// collect writes the batch's results in order until the first line not
// done yet, or with wait until the batch is finished. It returns how many
// lines it wrote.
//
// Once the batch has been seen (exists is true at the start, or it
// appears), a batch that vanishes is an error: its keys were evicted,
// expired or flushed, and no more results will come.
func collect(ctx context.Context, b *fleet.Batch, out io.Writer, wait, exists bool, bar *progress) (int, error) {
	w := bufio.NewWriterSize(out, 64<<10)
	written, after := 0, 0
	for {
		rs, err := b.Results(ctx, after, 1000)
		if err != nil {
			return written, err
		}
		stalled := len(rs) == 0
		for _, r := range rs {
			if r.Data == nil {
				stalled = true
				break
			}
			// A line of pages (fetch --paginate) has an output line
			// per page, in order.
			for _, p := range r.Pages {
				w.Write(p)
				w.WriteByte('\n')
			}
			if len(r.Data) > 0 || len(r.Pages) == 0 {
				w.Write(r.Data)
				if err := w.WriteByte('\n'); err != nil {
					return written, fmt.Errorf("writing results: %w", err)
				}
			}
			written++
			after = r.Line
			bar.add()
		}
		if !stalled {
			continue
		}
		// Everything done so far is out before we wait or stop.
		if err := w.Flush(); err != nil {
			return written, fmt.Errorf("writing results: %w", err)
		}
		if len(rs) == 0 {
			st, err := b.Status(ctx)
			if err != nil {
				return written, err
			}
			if st.Sealed && int64(written) >= st.Total {
				return written, nil
			}
			if exists && !st.Exists {
				return written, fmt.Errorf("batch %s: %w", b.Name(), fleet.ErrBatchGone)
			}
			exists = exists || st.Exists
		}
		if !wait {
			return written, nil
		}
		select {
		case <-ctx.Done():
			return written, fmt.Errorf("interrupted: %w", ctx.Err())
		case <-time.After(collectPoll):
		}
	}
}
