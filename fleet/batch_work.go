package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/courier-go/courier/errors"
)

// DefaultLease is how long a worker holds a line without renewing it
// before other workers may take it over.
const DefaultLease = 30 * time.Second

// WorkerOptions tunes [Batch.Work]. The zero value gives the defaults. It
// is a plain value: Work keeps a copy.
type WorkerOptions struct {
	// Name names the worker in the consumer group and in
	// [Status.Workers]. If empty, the host name, the process id and a
	// random suffix.
	Name string
	// Concurrency is how many lines the worker holds at once, and so
	// how many its handler runs at once. If zero, 16.
	Concurrency int
	// Lease is how long a line is held without renewal. The worker
	// renews its lines every third of it; a line idle for longer (its
	// worker died or stalled) is taken over by another worker. If zero,
	// [DefaultLease].
	Lease time.Duration
	// StoreWait bounds how long storing a result waits for a Redis that
	// does not answer before the store counts as failed. If zero, the
	// lease, and at least 10s.
	StoreWait time.Duration
	// WaitForBatch makes a worker for a batch that does not exist yet
	// wait for its first line to be added. If false, [Batch.Work] fails
	// at once with [ErrNoBatch]: a misspelt name is an error, not a
	// silent wait.
	WaitForBatch bool
	// OnStoreError, if set, is told of each result that could not be
	// stored: its line, released at once for another try (by this worker
	// or another), and why. It is called from the goroutine that stored,
	// one call at a time; it must not block.
	OnStoreError func(line int, err error)
}

// storeFailures is how many stores in a row may fail before a worker
// stops: a Redis that refuses every write (OOM) would otherwise have it
// fetch lines it can never record.
const storeFailures = 3

// Outcome is what a [Handler] made of a line, a plain value. The zero
// Outcome stores an empty result that is not a failure.
type Outcome struct {
	Data   []byte // the result to store
	Failed bool   // the result is a failure ([Status.Failed] counts it)
	// Skip stores nothing and leaves the line to a worker that can do it
	// (this one is stopping, say, or its session ended).
	Skip bool
}

// PageHandler does one line of a batch whose line is done page by page
// (a crawl): it stores each page but the last with p's [Pager.Store] as
// it goes, and returns the last as its [Outcome]. A worker that takes
// over a line from one that died carries on from the pages stored (see
// [Pager.Resume]). Like a [Handler] it is called from up to
// [WorkerOptions.Concurrency] goroutines at once; p is its own, for that
// call only.
type PageHandler func(ctx context.Context, l Line, p *Pager) Outcome

// Handler does one line of a batch. It is called from up to
// [WorkerOptions.Concurrency] goroutines at once, so it must be safe for
// concurrent use; ctx ends when the worker is stopped. A nil Handler is
// not usable: [Batch.Work] calls it for every line.
type Handler func(ctx context.Context, l Line) Outcome

// WorkStats counts what one worker did, a plain value returned by
// [Batch.Work]; the zero value is a worker that did nothing.
type WorkStats struct {
	Taken     int64 // lines read for the first time
	TakenOver int64 // lines taken over from a worker whose lease ran out
	Stored    int64 // results stored (the first for their line)
	Late      int64 // results dropped: another worker stored one first
	Skipped   int64 // lines left to other workers
	// NotStored counts results that could not be stored; their lines
	// were released for another try.
	NotStored int64
	Malformed int64 // entries skipped: not lines (see [Batch])
}

// storeScript stores results unless their lines have one already, and
// acknowledges their entries, in one step: whichever worker comes first
// wins, and a line is never acknowledged without a result. A line stored
// page by page (see [Pager]) is finished only by the worker that knows
// every page stored before it: a result that expects another count of
// pages than the line has (another worker took the line over and moved
// it on) is neither stored nor acknowledged. A batch whose meta is gone
// (evicted, flushed) gets nothing written: the script fails with GONE.
//
// KEYS: results, lines, meta, workers. ARGV: TTL in ms, then per result,
// line, result, failed flag, entry ID and the count of pages stored
// before it. Returns per result 1 when it was stored, 0 when its line had
// one already, 2 when its line's pages moved on (not acknowledged).
var storeScript = redis.NewScript(aclPrelude + `
local no = denied({'HSETNX', KEYS[1], '0', '0'}, {'XACK', KEYS[2], 'workers', '0-1'},
  {'HINCRBY', KEYS[3], 'done', '0'}, {'PEXPIRE', KEYS[1], ARGV[1]}, {'PEXPIRE', KEYS[2], ARGV[1]},
  {'PEXPIRE', KEYS[3], ARGV[1]}, {'PEXPIRE', KEYS[4], ARGV[1]})
if no then return redis.error_reply(no) end
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('GONE the batch has no meta or no stream')
end
local stored, ids, done, failed = {}, {}, 0, 0
for i = 2, #ARGV, 5 do
  local p = redis.call('HGET', KEYS[1], ARGV[i] .. '.p')
  local have = 0
  if p then have = tonumber(string.match(p, '^(%d+)')) end
  if have ~= tonumber(ARGV[i+4]) and redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    stored[#stored+1] = 2
  else
    local fresh = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i+1])
    stored[#stored+1] = fresh
    ids[#ids+1] = ARGV[i+3]
    if fresh == 1 then
      done = done + 1
      if ARGV[i+2] == '1' then failed = failed + 1 end
    end
  end
end
if #ids > 0 then redis.call('XACK', KEYS[2], 'workers', unpack(ids)) end
if done > 0 then redis.call('HINCRBY', KEYS[3], 'done', done) end
if failed > 0 then redis.call('HINCRBY', KEYS[3], 'failed', failed) end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return stored
`)

// skipScript acknowledges entries that are not lines and counts them as
// malformed, each once whichever worker skips it (XACK answers 1 only to
// the first). A batch whose meta is gone gets nothing written.
//
// KEYS: lines, meta. ARGV: entry IDs.
var skipScript = redis.NewScript(aclPrelude + `
local no = denied({'XACK', KEYS[1], 'workers', '0-1'}, {'HINCRBY', KEYS[2], 'malformed', '0'})
if no then return redis.error_reply(no) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('GONE the batch has no meta')
end
local n = 0
for i = 1, #ARGV do n = n + redis.call('XACK', KEYS[1], 'workers', ARGV[i]) end
if n > 0 then redis.call('HINCRBY', KEYS[2], 'malformed', n) end
return n
`)

// leaseScript renews a worker's lease: its entry in the workers set, and
// the idle time of each entry it still holds (one another worker took
// over is left alone), and the TTL of the batch's keys. A batch whose meta
// is gone gets nothing written: it answers -1.
//
// KEYS: lines, workers, meta, results. ARGV: worker, lease in ms, TTL in
// ms, entry IDs...
var leaseScript = redis.NewScript(aclPrelude + `
local no = denied({'ZADD', KEYS[2], '0', ARGV[1]}, {'ZREMRANGEBYSCORE', KEYS[2], '-inf', '0'},
  {'XCLAIM', KEYS[1], 'workers', ARGV[1], '0', '0-1', 'JUSTID'}, {'PEXPIRE', KEYS[1], ARGV[3]},
  {'PEXPIRE', KEYS[2], ARGV[3]}, {'PEXPIRE', KEYS[3], ARGV[3]}, {'PEXPIRE', KEYS[4], ARGV[3]})
if no then return redis.error_reply(no) end
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 86400000)
local kept = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'workers', ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, ARGV[i], 'JUSTID')
    kept = kept + 1
  end
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return kept
`)

// goneError turns an error of Redis that says the batch's keys are gone
// (a script's GONE, NOGROUP from a stream read) into one that matches
// [ErrBatchGone]; others are returned as they are.
func (b *Batch) goneError(err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		if msg := rerr.Error(); strings.HasPrefix(msg, "GONE") || strings.HasPrefix(msg, "NOGROUP") {
			return fmt.Errorf("fleet: batch %s: %w", b.where(), ErrBatchGone)
		}
	}
	return err
}

// worker is one call of Work.
type worker struct {
	b      *Batch
	opts   WorkerOptions
	handle PageHandler

	mu   sync.Mutex          // protects held
	held map[string]struct{} // entry IDs being handled

	stats struct {
		sync.Mutex // protects s
		s          WorkStats
	}

	flush struct {
		sync.Mutex             // protects queue, busy and failures
		queue      []*storeReq // results waiting for the store under way
		busy       bool        // a goroutine is storing
		failures   int         // stores failed in a row
	}

	// stop ends run with a cause: the batch is gone, or storing failed
	// storeFailures times in a row. Set before run starts.
	stop context.CancelCauseFunc

	last struct {
		sync.Mutex     // protects n
		n          int // the highest line added, as last read
	}
}

// Work takes lines of the batch and runs handle on each, storing the
// results, until every line of the sealed batch has a result or ctx ends.
// The batch must exist (a line, or an empty input, added by [Batch.Add]):
// Work on a batch that does not fails at once with [ErrNoBatch], unless
// [WorkerOptions.WaitForBatch] asks it to wait; it never makes a key of
// the batch itself. A batch made for another base URL is refused with a
// [*BaseURLError]. A worker may join before the batch is sealed; it waits
// for the remaining lines.
//
// Each line is read once through the consumer group, or taken over with
// XAUTOCLAIM when it has been idle for longer than the lease; the worker
// renews the lease of the lines it holds while their handler runs. A
// result is stored and its entry acknowledged by one script, and the
// first result of a line wins, so a line handled twice (its first worker
// stalled past the lease, or died after fetching) is recorded once. So a
// worker that dies costs at most the lines it held: 2 × Concurrency (see
// run).
//
// While Redis is unreachable, Work waits for it, keeping the results it
// has and storing them when it is back, for up to
// [WorkerOptions.StoreWait]. A result that could not be stored by then
// (or that Redis refused: OOM, say) is dropped, its line released for
// another try, by this worker or another, and the failure told to
// [WorkerOptions.OnStoreError] and counted in [WorkStats.NotStored]. After
// 3 failed stores in a row Work stops with the last one's error. Work
// stops with [ErrBatchGone] when the batch's keys vanish (evicted, expired,
// flushed), having written nothing into the emptied Redis.
//
// Work returns ctx's error when ctx ends first; the lines it held and did
// not finish are handed back at once, without waiting for the lease.
func (b *Batch) Work(ctx context.Context, opts WorkerOptions, handle Handler) (WorkStats, error) {
	if handle == nil {
		return WorkStats{}, fmt.Errorf("fleet: batch %s: Work needs a Handler, got nil", b.name)
	}
	return b.WorkPages(ctx, opts, func(ctx context.Context, l Line, _ *Pager) Outcome { return handle(ctx, l) })
}

// WorkPages is [Batch.Work] for lines done page by page: handle stores
// each page of its line but the last with [Pager.Store] as it goes, each
// with the line's progress, while the worker holds the line, and returns
// the last page as its [Outcome], which finishes the line ([Status.Done]
// counts it once, however many pages it had). A worker that dies
// mid-line leaves its pages stored; the worker that takes the line over
// gets them from [Pager.Resume] and carries on after them, so a page
// stored is never fetched again. [Batch.Results] gives a line's pages in
// order.
func (b *Batch) WorkPages(ctx context.Context, opts WorkerOptions, handle PageHandler) (WorkStats, error) {
	if handle == nil {
		return WorkStats{}, fmt.Errorf("fleet: batch %s: WorkPages needs a PageHandler, got nil", b.name)
	}
	if opts.Name == "" {
		opts.Name = defaultWorkerName()
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.StoreWait <= 0 {
		opts.StoreWait = max(opts.Lease, 10*time.Second)
	}
	w := &worker{b: b, opts: opts, handle: handle, held: map[string]struct{}{}}
	if err := w.join(ctx); err != nil {
		return WorkStats{}, err
	}

	// The renewer runs until the handlers are done; it is stopped and
	// waited for before Work returns.
	renewCtx, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
	var renewer sync.WaitGroup
	renewer.Add(1)
	go func() {
		defer renewer.Done()
		w.renewLoop(renewCtx)
	}()

	runCtx, stop := context.WithCancelCause(ctx)
	w.stop = stop
	err := w.run(runCtx)
	if cause := context.Cause(runCtx); ctx.Err() == nil && cause != nil && cause != context.Canceled {
		err = cause
	}
	stop(nil)

	stopRenew()
	renewer.Wait()
	w.leave()
	w.stats.Lock()
	defer w.stats.Unlock()
	return w.stats.s, err
}

// join checks that the batch exists (waiting for it with
// WaitForBatch) and was made for the worker's base URL, and enters the
// worker in the live set.
func (w *worker) join(ctx context.Context) error {
	b := w.b
	poll := min(w.opts.Lease/3, 200*time.Millisecond)
	for {
		var m map[string]string
		err := retry(ctx, func() error {
			var err error
			m, err = b.rdb.HGetAll(ctx, b.keys.meta).Result()
			return err
		})
		if err != nil {
			return fmt.Errorf("fleet: batch %s: joining: %w", b.name, err)
		}
		if len(m) > 0 {
			if b.hash != "" && m["basehash"] != "" && m["basehash"] != b.hash {
				return &BaseURLError{Batch: b.name, Made: m["base"], Got: b.base}
			}
			break
		}
		if !w.opts.WaitForBatch {
			return fmt.Errorf("fleet: batch %s: %w (add its lines first, or wait for them)", b.where(), ErrNoBatch)
		}
		if err := sleep(ctx, poll); err != nil {
			return err
		}
	}
	err := retry(ctx, func() error {
		kept, err := w.renew(ctx)
		if err == nil && kept < 0 {
			err = ErrBatchGone
		}
		return err
	})
	if errors.Is(err, ErrBatchGone) {
		return fmt.Errorf("fleet: batch %s: %w", b.where(), ErrBatchGone)
	}
	if err != nil {
		return fmt.Errorf("fleet: batch %s: joining: %w", b.name, err)
	}
	return nil
}

func defaultWorkerName() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// run reads lines and hands them to handlers until the batch is finished
// or ctx ends, then waits for the handlers.
//
// A worker holds up to 2 × Concurrency lines: Concurrency running, and as
// many read ahead, so that it reads lines in batches of Concurrency or
// more (a few Redis commands per batch, not per line) and its handlers
// never wait for a read. A worker that dies loses at most those.
func (w *worker) run(ctx context.Context) error {
	c := w.opts.Concurrency
	// held has a token for each line held, running or read ahead.
	held := make(chan struct{}, 2*c)
	// running has a token for each handler running.
	running := make(chan struct{}, c)
	var handlers sync.WaitGroup
	defer handlers.Wait()
	// poll bounds how long a read waits for new lines, and how often the
	// worker looks for lines to take over and for the batch's end.
	poll := min(w.opts.Lease/3, 200*time.Millisecond)
	cursor := "0-0"
	var lastClaim time.Time
	for {
		// Wait until no more than Concurrency lines are held, then take
		// room for as many as are free.
		for range c {
			select {
			case held <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		free := c
		for free < 2*c {
			select {
			case held <- struct{}{}:
				free++
				continue
			default:
			}
			break
		}
		var (
			msgs     []redis.XMessage
			takeover bool
			err      error
		)
		if time.Since(lastClaim) >= poll {
			lastClaim = time.Now()
			msgs, err = w.claim(ctx, &cursor, free)
			takeover = len(msgs) > 0
		}
		if err == nil && len(msgs) == 0 {
			msgs, err = w.read(ctx, free, -1)
		}
		if err == nil && len(msgs) == 0 {
			var finished bool
			if finished, err = w.finished(ctx); err == nil && finished {
				return nil
			}
			if err == nil {
				msgs, err = w.read(ctx, free, poll)
			}
		}
		var lines []redis.XMessage
		if err == nil {
			lines, err = w.sortOut(ctx, msgs)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err = w.b.goneError(err); errors.Is(err, ErrBatchGone) {
				return err
			}
			return fmt.Errorf("fleet: batch %s: reading lines: %w", w.b.name, err)
		}
		for range free - len(lines) {
			<-held
		}
		for _, m := range lines {
			l, _ := lineFromEntry(m, w.lastLine())
			w.mu.Lock()
			w.held[m.ID] = struct{}{}
			w.mu.Unlock()
			w.count(func(s *WorkStats) {
				if takeover {
					s.TakenOver++
				} else {
					s.Taken++
				}
			})
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				defer func() { <-held }()
				select {
				case running <- struct{}{}:
				case <-ctx.Done():
					w.count(func(s *WorkStats) { s.Skipped++ })
					return // still held: leave hands it back
				}
				pg := &Pager{w: w, id: m.ID, line: l.N}
				out := w.handle(ctx, l, pg)
				<-running // the next line may start while this one is stored
				if pg.lost {
					// Another worker has the line now: it is not this
					// one's to store, renew or hand back.
					w.mu.Lock()
					delete(w.held, m.ID)
					w.mu.Unlock()
					w.count(func(s *WorkStats) { s.Late++ })
					return
				}
				if pg.failed != nil {
					w.notStored(m.ID, l.N, pg.failed)
					return
				}
				w.store(ctx, m.ID, l, out, pg.stored)
			}()
		}
	}
}

// claim takes over up to count lines idle for longer than the lease,
// scanning the pending entries from cursor on.
func (w *worker) claim(ctx context.Context, cursor *string, count int) ([]redis.XMessage, error) {
	var msgs []redis.XMessage
	err := retry(ctx, func() error {
		var err error
		var next string
		msgs, next, err = w.b.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: w.b.keys.lines, Group: group, Consumer: w.opts.Name,
			MinIdle: w.opts.Lease, Start: *cursor, Count: int64(count),
		}).Result()
		if err != nil {
			next = "0-0"
		}
		*cursor = next
		return err
	})
	return msgs, err
}

// read reads up to count new lines, waiting up to block for them (not at
// all when block is negative).
func (w *worker) read(ctx context.Context, count int, block time.Duration) ([]redis.XMessage, error) {
	var msgs []redis.XMessage
	err := retry(ctx, func() error {
		streams, err := w.b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: w.opts.Name, Streams: []string{w.b.keys.lines, ">"},
			Count: int64(count), Block: block,
		}).Result()
		if err == redis.Nil {
			return nil
		}
		if err == nil && len(streams) > 0 {
			msgs = streams[0].Messages
		}
		return err
	})
	return msgs, err
}

// sortOut returns the messages that are lines of the batch, and skips
// the others (see [Batch]): acknowledged, so that they are not read
// again, and counted as malformed.
func (w *worker) sortOut(ctx context.Context, msgs []redis.XMessage) ([]redis.XMessage, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	// A line past the highest known is one added since it was read.
	if n, ok := lineOf(msgs[len(msgs)-1].ID); !ok || n > w.lastLine() {
		var last int
		err := retry(ctx, func() error {
			var err error
			last, err = w.b.lastLine(ctx)
			return err
		})
		if err != nil {
			return nil, err
		}
		w.last.Lock()
		w.last.n = last
		w.last.Unlock()
	}
	last := w.lastLine()
	var lines []redis.XMessage
	var bad []any
	for _, m := range msgs {
		if _, ok := lineFromEntry(m, last); ok {
			lines = append(lines, m)
		} else {
			bad = append(bad, m.ID)
		}
	}
	if len(bad) > 0 {
		err := retry(ctx, func() error {
			return skipScript.Run(ctx, w.b.rdb, []string{w.b.keys.lines, w.b.keys.meta}, bad...).Err()
		})
		if err != nil {
			return nil, err
		}
		w.count(func(s *WorkStats) { s.Malformed += int64(len(bad)) })
	}
	return lines, nil
}

func (w *worker) lastLine() int {
	w.last.Lock()
	defer w.last.Unlock()
	return w.last.n
}

// storeReq is one result waiting to be stored.
type storeReq struct {
	id    string
	line  int
	out   Outcome
	pages int   // pages of the line stored before this result
	fresh bool  // stored first; set before done is closed
	err   error // set before done is closed
	done  chan struct{}
}

// store stores the outcome of a line. Results that finish while a store
// is under way are stored together by one script call after it (a group
// commit): one round trip for many lines when Redis is the bottleneck, and
// no wait when it is not.
func (w *worker) store(ctx context.Context, id string, l Line, out Outcome, pages int) {
	if out.Skip {
		w.count(func(s *WorkStats) { s.Skipped++ })
		return // still held: leave hands it back
	}
	r := &storeReq{id: id, line: l.N, out: out, pages: pages, done: make(chan struct{})}
	w.flush.Lock()
	w.flush.queue = append(w.flush.queue, r)
	if !w.flush.busy {
		// This goroutine stores what is queued until nothing is.
		w.flush.busy = true
		for len(w.flush.queue) > 0 {
			batch := w.flush.queue
			w.flush.queue = nil
			w.flush.Unlock()
			w.storeBatch(ctx, batch)
			w.flush.Lock()
		}
		w.flush.busy = false
	}
	w.flush.Unlock()
	<-r.done
	// Stored or not, the line is no longer this worker's to renew: one
	// whose result could not be stored is released, so that it is tried
	// again (by this worker or another) once its lease has lapsed, or at
	// once when the hand-back below reaches Redis.
	w.mu.Lock()
	delete(w.held, id)
	w.mu.Unlock()
	if r.err != nil {
		w.notStored(id, l.N, r.err)
		return
	}
	w.count(func(s *WorkStats) {
		if r.fresh {
			s.Stored++
		} else {
			s.Late++
		}
	})
}

// notStored releases line n's entry id, whose result or page could not
// be stored, for another try, and tells OnStoreError. The entry is no
// longer in held.
func (w *worker) notStored(id string, n int, err error) {
	w.mu.Lock()
	delete(w.held, id)
	w.mu.Unlock()
	w.count(func(s *WorkStats) { s.NotStored++ })
	if !errors.Is(err, ErrBatchGone) {
		w.handBack(id)
	}
	if w.opts.OnStoreError != nil {
		w.opts.OnStoreError(n, err)
	}
}

// storeBatch stores reqs, at most 64 per script call, and closes their done.
func (w *worker) storeBatch(ctx context.Context, reqs []*storeReq) {
	for len(reqs) > 0 {
		chunk := reqs[:min(64, len(reqs))]
		reqs = reqs[len(chunk):]
		args := make([]any, 0, 1+5*len(chunk))
		args = append(args, w.b.ttl())
		for _, r := range chunk {
			args = append(args, r.line, r.out.Data, boolFlag(r.out.Failed), r.id, r.pages)
		}
		// The results are worth storing even when the worker is
		// stopping; while Redis is away it keeps trying for a lease at
		// least, after which the lines may be taken over anyway.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.opts.StoreWait)
		var stored []int64
		err := retry(sctx, func() error {
			var err error
			stored, err = storeScript.Run(sctx, w.b.rdb, w.b.storeKeys(), args...).Int64Slice()
			return err
		})
		cancel()
		if err != nil {
			err = w.b.goneError(err)
			if !errors.Is(err, ErrBatchGone) {
				err = fmt.Errorf("fleet: batch %s: storing results: %w", w.b.name, err)
			}
		}
		w.stored(err)
		for i, r := range chunk {
			r.err = err
			if err == nil && i < len(stored) {
				r.fresh = stored[i] == 1
			}
			close(r.done)
		}
	}
}

func (b *Batch) storeKeys() []string {
	return []string{b.keys.results, b.keys.lines, b.keys.meta, b.keys.workers}
}

// stored notes how a store went. The worker stops when the batch is gone,
// or when storeFailures stores in a row have failed.
func (w *worker) stored(err error) {
	w.flush.Lock()
	if err == nil {
		w.flush.failures = 0
	} else {
		w.flush.failures++
	}
	failures := w.flush.failures
	w.flush.Unlock()
	switch {
	case errors.Is(err, ErrBatchGone):
		w.stop(err)
	case failures >= storeFailures:
		w.stop(fmt.Errorf("%w (%d stores in a row failed; their lines were released)", err, failures))
	}
}

// handBack marks an entry of this worker idle for a whole lease, so that
// any worker may take it over at once. It tries once, briefly: if Redis
// does not answer, the entry's lease lapses on its own.
func (w *worker) handBack(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = w.b.rdb.Do(ctx, "XCLAIM", w.b.keys.lines, group, w.opts.Name, 0, id,
		"IDLE", w.opts.Lease.Milliseconds(), "JUSTID").Err()
}

func (w *worker) count(f func(*WorkStats)) {
	w.stats.Lock()
	f(&w.stats.s)
	w.stats.Unlock()
}

// finished reports whether every line of the sealed batch has a result.
func (w *worker) finished(ctx context.Context) (bool, error) {
	var vals []any
	err := retry(ctx, func() error {
		var err error
		vals, err = w.b.rdb.HMGet(ctx, w.b.keys.meta, "sealed", "done", "total").Result()
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("fleet: batch %s: reading counters: %w", w.b.name, err)
	}
	if vals[2] == nil {
		// Add writes total first of all, and nothing deletes it but
		// Remove, an eviction, an expiry or a flush.
		return false, fmt.Errorf("fleet: batch %s: %w", w.b.where(), ErrBatchGone)
	}
	sealed, _ := vals[0].(string)
	done, _ := vals[1].(string)
	if sealed == "" {
		return false, nil
	}
	total, _ := strconv.ParseInt(sealed, 10, 64)
	n, _ := strconv.ParseInt(done, 10, 64)
	return n >= total, nil
}

// renewLoop renews the worker's lease every third of it until ctx ends.
func (w *worker) renewLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// An error (Redis away) is tried again at the next tick.
			if kept, err := w.renew(ctx); err == nil && kept < 0 {
				w.stop(fmt.Errorf("fleet: batch %s: %w", w.b.where(), ErrBatchGone))
				return
			}
		}
	}
}

// renew renews the worker's lease and answers how many of its entries it
// still holds, or -1 when the batch is gone.
func (w *worker) renew(ctx context.Context) (int64, error) {
	args := []any{w.opts.Name, w.opts.Lease.Milliseconds(), w.b.ttl()}
	w.mu.Lock()
	for id := range w.held {
		args = append(args, id)
	}
	w.mu.Unlock()
	// A renewal that comes later than the lease is of no use.
	ctx, cancel := context.WithTimeout(ctx, w.opts.Lease)
	defer cancel()
	return leaseScript.Run(ctx, w.b.rdb, []string{w.b.keys.lines, w.b.keys.workers, w.b.keys.meta, w.b.keys.results}, args...).Int64()
}

// leave takes the worker out of the live set and hands back the lines it
// holds unfinished, marked idle for a whole lease so that any worker may
// take them over at once.
func (w *worker) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w.mu.Lock()
	ids := make([]any, 0, len(w.held))
	for id := range w.held {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	if len(ids) > 0 {
		args := append([]any{"XCLAIM", w.b.keys.lines, group, w.opts.Name, 0}, ids...)
		args = append(args, "IDLE", w.opts.Lease.Milliseconds(), "JUSTID")
		_ = w.b.rdb.Do(ctx, args...).Err()
	}
	_ = w.b.rdb.ZRem(ctx, w.b.keys.workers, w.opts.Name).Err()
}
