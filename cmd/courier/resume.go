package main

// Resumable batches: `courier fetch --resume --out FILE`.
//
// The output file is the checkpoint. Each of its lines is a result line
// with one more field, "hash": a digest of the input line it answers. On
// start the file is read back, a torn last line (a write cut short by a
// crash) is cut off if a whole result line comes before it (a file with
// none is not a checkpoint: it is refused and left as it is), and every
// input line already answered is skipped after its hash is checked, so a
// changed input is an error and never a silent skip. The other lines are fetched and appended in input order, each
// written to the file as soon as it and every line before it are done.
//
// At most --concurrency lines are between "submitted" and "written" at any
// time (the window). A kill -9 therefore loses at most --concurrency
// answers: the lines in flight, and lines done but waiting behind an
// earlier line still in flight. They are fetched again on resume; POSTs and
// PATCHes are applied once anyway with --idempotency-keys.
//
// --resume-failed fetches again the lines whose stored answer failed. Those
// lines sit in the middle of the file, so that run writes a new file next
// to it (FILE.resume), copying the answers it keeps and fetching the rest,
// and renames it over FILE at the end. Killed before that, the next run
// finds FILE.resume and carries on from its end.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
)

// resumeOptions are fetch's flags for resumable batches.
type resumeOptions struct {
	resume, resumeFailed, idempotencyKeys bool
}

func resumeFlags(fs *pflag.FlagSet, o *resumeOptions) {
	fs.BoolVar(&o.resume, "resume", false, "the --out file is a checkpoint: skip the lines it answers, append the rest")
	fs.BoolVar(&o.resumeFailed, "resume-failed", false, "with --resume, fetch again the lines whose stored answer failed")
	fs.BoolVar(&o.idempotencyKeys, "idempotency-keys", false, "give each POST/PATCH line an Idempotency-Key derived from the input and its line number")
}

// wanted reports whether fetch runs through the resumable path.
func (o *resumeOptions) wanted() bool {
	return o.resume || o.resumeFailed || o.idempotencyKeys
}

// lineHash is the "hash" field: the first 128 bits of the SHA-256 of the
// input line as read (without its newline), in hex.
func lineHash(text string) string {
	h := sha256.Sum256([]byte(text))
	return hex.EncodeToString(h[:16])
}

// batchKeys derives Idempotency-Keys for an input: the key of line n is a
// digest of every input line up to and including n. It is the same on
// every run of the same input, and differs between inputs (a comment line
// on top makes a new batch of the same requests).
type batchKeys struct {
	prefix [sha256.Size]byte // digest of the lines so far
}

func newBatchKeys() *batchKeys {
	return &batchKeys{prefix: sha256.Sum256([]byte("courier batch"))}
}

// next takes line n's hash and returns its key.
func (k *batchKeys) next(n int, hash string) string {
	h := sha256.New()
	h.Write(k.prefix[:])
	h.Write([]byte(strconv.Itoa(n) + ":" + hash))
	h.Sum(k.prefix[:0])
	return "courier-" + hex.EncodeToString(k.prefix[:16])
}

// setIdempotencyKey gives a POST or PATCH line key, unless the line sets its
// own Idempotency-Key.
func setIdempotencyKey(in *inputLine, key string) {
	if in.err != nil || in.req == nil || (in.method != "POST" && in.method != "PATCH") {
		return
	}
	if in.req.IdempotencyKey != "" || in.req.Header.Get("Idempotency-Key") != "" {
		return
	}
	in.req.IdempotencyKey = key
}

// checkpointLine is a result line of a resumable run.
type checkpointLine struct {
	result
	// Next is the next page of a pagination still under way (fetch
	// --paginate): the run that resumes it starts there.
	Next string `json:"next,omitempty"`
	Hash string `json:"hash"`
}

// answer is one line of a checkpoint file.
type answer struct {
	line      int
	hash      string
	failed    bool
	off, size int64 // where the line (newline included) sits in its file
	// page and next are a pagination's (fetch --paginate): the page's
	// number, and the next page's URL while the line is not done.
	page int
	next string
}

// checkpointError is a checkpoint that cannot be trusted: a usage error.
type checkpointError struct{ msg string }

func (e *checkpointError) Error() string { return e.msg }

func badCheckpoint(format string, a ...any) error {
	return &checkpointError{msg: fmt.Sprintf(format, a...)}
}

// readCheckpoint reads every complete line of r. end is the offset just
// past the last complete line: a torn line after it is to be cut off.
func readCheckpoint(r io.Reader, name string) (answers []answer, end int64, err error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var fields struct {
		Line  int     `json:"line"`
		Page  int     `json:"page"`
		Next  string  `json:"next"`
		Hash  string  `json:"hash"`
		Error *string `json:"error"`
	}
	for n := 1; ; n++ {
		b, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line (a large body): gather it.
			full := append([]byte(nil), b...)
			for err == bufio.ErrBufferFull {
				b, err = br.ReadSlice('\n')
				full = append(full, b...)
			}
			b = full
		}
		if err == io.EOF {
			if len(b) > 0 && len(answers) == 0 {
				// A torn line is a write that a crash cut short, and
				// only a checkpoint has writes to cut: a file with no
				// complete result line before it is someone else's.
				return nil, 0, badCheckpoint("%s is not a checkpoint written by fetch --resume: it holds no complete result line, only %d bytes without a newline (left as it is; use another --out file)", name, len(b))
			}
			return answers, end, nil // b, if any, is a torn line
		}
		if err != nil {
			return nil, 0, fmt.Errorf("reading %s: %w", name, err)
		}
		fields.Line, fields.Page, fields.Next, fields.Hash, fields.Error = 0, 0, "", "", nil
		if line, hash, ok := quickFields(b); ok {
			fields.Line, fields.Hash = line, hash
		} else if err := json.Unmarshal(b, &fields); err != nil {
			return nil, 0, badCheckpoint("%s line %d is not a result line: %v", name, n, err)
		}
		if fields.Hash == "" {
			return nil, 0, badCheckpoint("%s line %d has no \"hash\": only files written by fetch --resume can be resumed", name, n)
		}
		outOfOrder := fields.Line < 1
		if len(answers) > 0 && fields.Line <= answers[len(answers)-1].line {
			// Pages of one line follow each other, numbered on.
			prev := answers[len(answers)-1]
			outOfOrder = outOfOrder || fields.Line != prev.line || prev.page == 0 || fields.Page != prev.page+1
		}
		if outOfOrder {
			return nil, 0, badCheckpoint("%s line %d answers input line %d out of order", name, n, fields.Line)
		}
		answers = append(answers, answer{line: fields.Line, hash: fields.Hash, failed: fields.Error != nil, off: end, size: int64(len(b)),
			page: fields.Page, next: fields.Next})
		end += int64(len(b))
	}
}

// quickFields reads the line number and hash of a result line without
// decoding its body, which is most of the time a resume spends: lines
// written by a resumable run start with {"line":N, and end with
// ,"hash":"<32 hex digits>"}. ok is false for a line of another shape, or
// one that may hold an "error" (a failure, or a body that says "error"):
// those are decoded in full.
func quickFields(b []byte) (line int, hash string, ok bool) {
	const head, tail = `{"line":`, `,"hash":"`
	b = bytes.TrimSuffix(b, []byte("\n"))
	rest, found := bytes.CutPrefix(b, []byte(head))
	comma := bytes.IndexByte(rest, ',')
	end := len(b) - len(`"}`) - 32 // where the hash starts
	if !found || comma < 1 || end-len(tail) < len(head) || !bytes.HasSuffix(b, []byte(`"}`)) ||
		string(b[end-len(tail):end]) != tail || bytes.Contains(b, []byte(`"error":`)) || bytes.Contains(b, []byte(`"page":`)) {
		return 0, "", false
	}
	line, err := strconv.Atoi(string(rest[:comma]))
	if err != nil {
		return 0, "", false
	}
	h := b[end : end+32]
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return 0, "", false
		}
	}
	return line, string(h), true
}

// blankOrComment reports whether fetch skips an input line (see
// parseLine).
func blankOrComment(text string) bool {
	text = strings.TrimSpace(text)
	return text == "" || strings.HasPrefix(text, "#")
}

// checkpoint is an open checkpoint file, with the answers it holds.
type checkpoint struct {
	path    string
	f       *os.File
	answers []answer
}

// openCheckpoint opens path for appending, creating it if needed, reads
// its answers and cuts off a torn last line.
func openCheckpoint(path string) (*checkpoint, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	answers, end, err := readCheckpoint(f, path)
	if err == nil {
		err = f.Truncate(end)
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &checkpoint{path: path, f: f, answers: answers}, nil
}

// readAnswers reads the answers of path without changing it; a missing
// file has none.
func readAnswers(path string) (*checkpoint, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return &checkpoint{}, nil
	}
	if err != nil {
		return nil, err
	}
	answers, _, err := readCheckpoint(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &checkpoint{path: path, f: f, answers: answers}, nil
}

func (c *checkpoint) close() {
	if c.f != nil {
		c.f.Close()
	}
}

// failures counts the failed answers.
func (c *checkpoint) failures() int {
	n := 0
	for _, a := range c.answers {
		if a.failed {
			n++
		}
	}
	return n
}

// runResumable is `courier fetch` with --resume, --resume-failed or
// --idempotency-keys.
func runResumable(ctx context.Context, o *fetchOptions, fs *pflag.FlagSet, cfg engine.Config, startInput func() *input, stdout, stderr io.Writer) int {
	fail := failer(stderr, "fetch", false)
	r := &resumable{opts: o.resume, window: o.concurrency}
	if o.resume.idempotencyKeys {
		r.keys = newBatchKeys()
	}
	var out io.Writer // nil: as fetch (--out FILE, or stdout)
	finish := func() error { return nil }
	if r.opts.resume || r.opts.resumeFailed {
		if o.out == "" {
			return fail(exitUsage, "--resume needs --out FILE: the output file is the checkpoint")
		}
		var err error
		finish, err = r.openFiles(o.out)
		if err != nil {
			if errors.As(err, new(*checkpointError)) {
				return fail(exitUsage, "%v", err)
			}
			return fail(exitUsage, "--out: %v", err)
		}
		defer r.close()
		out = r.target.f
	}
	return o.runLocal(fs, cfg, localRun{
		out: out,
		run: func(e *engine.Engine, out io.Writer, bar *progress, sum *summary) (int, error) {
			code, err := r.run(ctx, e, startInput(), out, bar, sum)
			if err == nil {
				err = finish()
			}
			return code, err
		},
		note: func(w io.Writer) {
			if r.kept > 0 {
				fmt.Fprintf(w, "kept        %d answered before (%d failed)\n", r.kept, r.keptFailed)
			}
		},
	}, stdout, stderr, fail)
}

// resumable runs one resumable fetch.
type resumable struct {
	opts   resumeOptions
	window int        // lines between submitted and written, at most
	keys   *batchKeys // nil without --idempotency-keys

	// target is the file written: FILE, or FILE.resume while rewriting.
	// Its answers are the prefix already done. old is FILE while
	// rewriting: its answers are copied, or fetched again when they failed
	// and --resume-failed is set.
	target, old *checkpoint

	kept, keptFailed int // answers kept from before; owned by run's goroutine
}

// openFiles opens the checkpoint for path and returns what to do once
// every line is written.
func (r *resumable) openFiles(path string) (finish func() error, err error) {
	// A symlinked --out is rewritten where it points, beside its target,
	// so that the rename replaces the target and the link stays a link.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	next := path + ".resume"
	_, statErr := os.Stat(next)
	rewriting := statErr == nil
	if !rewriting && r.opts.resumeFailed {
		old, err := readAnswers(path)
		if err != nil {
			return nil, err
		}
		rewriting = old.failures() > 0
		old.close()
	}
	finish = func() error { return nil }
	if rewriting {
		if r.old, err = readAnswers(path); err != nil {
			return nil, err
		}
		final := path
		path, finish = next, func() error {
			if err := r.target.f.Sync(); err != nil {
				return err
			}
			return os.Rename(next, final)
		}
	}
	if r.target, err = openCheckpoint(path); err != nil {
		return nil, err
	}
	r.kept, r.keptFailed = len(r.target.answers), r.target.failures()
	return finish, nil
}

func (r *resumable) close() {
	if r.target != nil {
		r.target.close()
	}
	if r.old != nil {
		r.old.close()
	}
}

// slot is one output line on its way to the writer, in input order.
type slot struct {
	meta lineMeta
	hash string
	f    *engine.Future // the request in flight; nil for a copy or an error
	copy []byte         // an answer kept from the old file, newline included
	// copyFailed is true when copy is a failure.
	copyFailed bool
	err        error // the input cannot go on: stop here
}

// run fetches what in still needs and writes it to out in input order.
func (r *resumable) run(ctx context.Context, e *engine.Engine, src *input, out io.Writer, bar *progress, sum *summary) (int, error) {
	defer src.Stop()
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// window tokens: one taken before a line is submitted, given back once
	// it is written.
	window := make(chan struct{}, r.window)
	slots := make(chan slot, r.window)
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		defer close(slots)
		r.read(ctx, e, src, window, slots)
	}()
	defer reader.Wait()
	defer func() {
		cancel()
		for range slots { // let the reader go
		}
	}()

	code := exitOK
	if r.keptFailed > 0 {
		code = exitFailed
	}
	start := time.Now()
	var buf bytes.Buffer
	var enc resultEncoder
	for s := range slots {
		if s.err != nil {
			return exitFailed, s.err
		}
		buf.Reset()
		if s.copy != nil {
			buf.Write(s.copy)
			r.kept++
			if s.copyFailed {
				r.keptFailed++
				code = max(code, exitFailed)
			}
		} else {
			<-s.f.Done()
			resp, err := s.f.Await(context.Background())
			if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
				// Stopped, not answered: leave it to the next run.
				return interrupted(parent)
			}
			res := describe(s.meta, engine.Result{Response: resp, Err: err})
			code = sum.add(&res, err, code)
			line, err := enc.encode(&res, r.target != nil, s.hash)
			if err != nil {
				return exitFailed, fmt.Errorf("writing results: %w", err)
			}
			buf.Write(line)
		}
		// One write per line: a crash tears at most this one.
		if _, err := out.Write(buf.Bytes()); err != nil {
			return exitFailed, fmt.Errorf("writing results: %w", err)
		}
		if s.f != nil {
			<-window
			bar.add()
		}
	}
	sum.elapsed = time.Since(start)
	if ctx.Err() != nil {
		return interrupted(parent)
	}
	// The input is at its end (read returns only then or when ctx ends).
	if err := src.Err(); err != nil {
		return exitFailed, err
	}
	return code, nil
}

// read walks the input: it checks the lines already answered, and sends
// the writer a slot for every other line, in order. It stops at the first
// line that contradicts the checkpoint, or when ctx ends.
func (r *resumable) read(ctx context.Context, e *engine.Engine, src *input, window chan struct{}, slots chan<- slot) {
	send := func(s slot) bool {
		select {
		case slots <- s:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var done, old []answer // answers still ahead in the input
	if r.target != nil {
		done = r.target.answers
	}
	if r.old != nil {
		old = r.old.answers
	}
	changed := func(line int, what string) slot {
		return slot{err: badCheckpoint("input line %d %s: the input changed since this batch started (use a new --out file for a new batch)", line, what)}
	}
	feed := lineFeed{src: src}
	for {
		raw, ok := feed.next(ctx)
		if !ok {
			if ctx.Err() != nil {
				return
			}
			break
		}
		n, text := raw.n, raw.text
		if raw.err != nil {
			// Over --max-line: its text was never kept, so its place
			// stands for it.
			text = fmt.Sprintf("\x00line %d over --max-line", n)
		}
		hash := lineHash(text)
		key := ""
		if r.keys != nil {
			key = r.keys.next(n, hash)
		}
		// A stored answer for a line before this one means the input now
		// skips that line: it changed.
		for _, ahead := range [][]answer{done, old} {
			if len(ahead) > 0 && ahead[0].line < n {
				send(changed(ahead[0].line, "is answered in the checkpoint but is now blank or a comment"))
				return
			}
		}
		if raw.err == nil && blankOrComment(text) {
			continue
		}
		if len(done) > 0 {
			if done[0].line > n {
				// The file answers a later line and not this one: lines
				// before and after n were written, so n's was lost from
				// the file (a run writes in input order), unless n was
				// blank when they were written.
				send(slot{err: badCheckpoint("the output file is missing line %d: %s answers input line %d next (a line lost from the file, or input line %d was blank or a comment when it was written); use a new --out file for a new batch", n, r.target.path, done[0].line, n)})
				return
			}
			if done[0].line != n || done[0].hash != hash {
				send(changed(n, "does not match its answer in the checkpoint"))
				return
			}
			done = done[1:]
			if len(old) > 0 && old[0].line == n {
				old = old[1:]
			}
			continue
		}
		if len(old) > 0 && old[0].line == n {
			a := old[0]
			old = old[1:]
			if a.hash != hash {
				send(changed(n, "does not match its answer in the checkpoint"))
				return
			}
			if !a.failed || !r.opts.resumeFailed {
				b := make([]byte, a.size)
				if _, err := r.old.f.ReadAt(b, a.off); err != nil {
					send(slot{err: fmt.Errorf("reading the checkpoint: %w", err)})
					return
				}
				if !send(slot{copy: b, copyFailed: a.failed}) {
					return
				}
				continue
			}
		}
		line, _ := src.parse(raw) // not skipped: see blankOrComment
		if key != "" {
			setIdempotencyKey(&line, key)
		}
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
			return
		}
		s := slot{meta: lineMeta{in: line, start: time.Now()}, hash: hash, f: e.Submit(ctx, line.req)}
		if !send(s) {
			return // s's request was submitted with ctx: it ends by itself
		}
	}
	if err := src.Err(); err != nil {
		send(slot{err: err})
		return
	}
	if len(done) > 0 {
		send(changed(done[0].line, "is answered in the checkpoint but missing from the input"))
	} else if len(old) > 0 {
		send(changed(old[0].line, "is answered in the checkpoint but missing from the input"))
	}
}
