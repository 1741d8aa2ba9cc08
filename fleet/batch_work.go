package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
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
}

// Outcome is what a [Handler] made of a line, a plain value. The zero
// Outcome stores an empty result that is not a failure.
type Outcome struct {
	Data   []byte // the result to store
	Failed bool   // the result is a failure ([Status.Failed] counts it)
	// Skip stores nothing and leaves the line to a worker that can do it
	// (this one is stopping, say, or its session ended).
	Skip bool
}

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
}

// storeScript stores results unless their lines have one already, and
// acknowledges their entries, in one step: whichever worker comes first
// wins, and a line is never acknowledged without a result.
//
// KEYS: results, lines, meta. ARGV: per result, line, result, failed flag
// and entry ID. Returns per result 1 when it was stored, 0 when its line
// had one already.
var storeScript = redis.NewScript(`
local stored, ids, done, failed = {}, {}, 0, 0
for i = 1, #ARGV, 4 do
  local fresh = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i+1])
  stored[#stored+1] = fresh
  ids[#ids+1] = ARGV[i+3]
  if fresh == 1 then
    done = done + 1
    if ARGV[i+2] == '1' then failed = failed + 1 end
  end
end
redis.call('XACK', KEYS[2], 'workers', unpack(ids))
if done > 0 then redis.call('HINCRBY', KEYS[3], 'done', done) end
if failed > 0 then redis.call('HINCRBY', KEYS[3], 'failed', failed) end
return stored
`)

// leaseScript renews a worker's lease: its entry in the workers set, and
// the idle time of each entry it still holds (one another worker took
// over is left alone).
//
// KEYS: lines, workers. ARGV: worker, lease in ms, entry IDs...
var leaseScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 86400000)
local kept = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'workers', ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, ARGV[i], 'JUSTID')
    kept = kept + 1
  end
end
return kept
`)

// worker is one call of Work.
type worker struct {
	b      *Batch
	opts   WorkerOptions
	handle Handler

	mu   sync.Mutex          // protects held
	held map[string]struct{} // entry IDs being handled

	stats struct {
		sync.Mutex // protects s
		s          WorkStats
	}

	flush struct {
		sync.Mutex             // protects queue and busy
		queue      []*storeReq // results waiting for the store under way
		busy       bool        // a goroutine is storing
	}
}

// Work takes lines of the batch and runs handle on each, storing the
// results, until every line of the sealed batch has a result or ctx ends.
// A worker may join before the batch is sealed, or before it has any
// line; it waits for them.
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
// has (for a lease at least) and storing them when it is back.
//
// Work returns ctx's error when ctx ends first; the lines it held and did
// not finish are handed back at once, without waiting for the lease.
func (b *Batch) Work(ctx context.Context, opts WorkerOptions, handle Handler) (WorkStats, error) {
	if handle == nil {
		return WorkStats{}, fmt.Errorf("fleet: batch %s: Work needs a Handler, got nil", b.name)
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
	w := &worker{b: b, opts: opts, handle: handle, held: map[string]struct{}{}}
	if err := b.createGroup(ctx); err != nil {
		return WorkStats{}, err
	}
	if err := retry(ctx, func() error { return w.renew(ctx) }); err != nil {
		return WorkStats{}, fmt.Errorf("fleet: batch %s: joining: %w", b.name, err)
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

	err := w.run(ctx)

	stopRenew()
	renewer.Wait()
	w.leave()
	w.stats.Lock()
	defer w.stats.Unlock()
	return w.stats.s, err
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
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("fleet: batch %s: reading lines: %w", w.b.name, err)
		}
		for range free - len(msgs) {
			<-held
		}
		for _, m := range msgs {
			l, ok := lineFromEntry(m)
			if !ok {
				// Not an entry Add wrote: acknowledge it, so that it is
				// not read again, and go on.
				_ = w.b.rdb.XAck(ctx, w.b.keys.lines, group, m.ID).Err()
				<-held
				continue
			}
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
				out := w.handle(ctx, l)
				<-running // the next line may start while this one is stored
				w.store(ctx, m.ID, l, out)
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

// lineFromEntry reads a stream entry.
func lineFromEntry(m redis.XMessage) (Line, bool) {
	n, err := lineOf(m.ID)
	text, ok1 := m.Values["text"].(string)
	hash, ok2 := m.Values["hash"].(string)
	keys, _ := m.Values["keys"].(string)
	return Line{N: n, Text: text, Hash: hash, IdempotencyKeys: keys == "1"}, err == nil && ok1 && ok2
}

// storeReq is one result waiting to be stored.
type storeReq struct {
	id    string
	line  int
	out   Outcome
	fresh bool  // stored first; set before done is closed
	err   error // set before done is closed
	done  chan struct{}
}

// store stores the outcome of a line. Results that finish while a store
// is under way are stored together by one script call after it (a group
// commit): one round trip for many lines when Redis is the bottleneck, and
// no wait when it is not.
func (w *worker) store(ctx context.Context, id string, l Line, out Outcome) {
	if out.Skip {
		w.count(func(s *WorkStats) { s.Skipped++ })
		return // still held: leave hands it back
	}
	r := &storeReq{id: id, line: l.N, out: out, done: make(chan struct{})}
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
	if r.err != nil {
		return // not stored: the entry stays pending, for another worker
	}
	w.mu.Lock()
	delete(w.held, id)
	w.mu.Unlock()
	w.count(func(s *WorkStats) {
		if r.fresh {
			s.Stored++
		} else {
			s.Late++
		}
	})
}

// storeBatch stores reqs, at most 64 per script call, and closes their done.
func (w *worker) storeBatch(ctx context.Context, reqs []*storeReq) {
	for len(reqs) > 0 {
		chunk := reqs[:min(64, len(reqs))]
		reqs = reqs[len(chunk):]
		args := make([]any, 0, 4*len(chunk))
		for _, r := range chunk {
			args = append(args, r.line, r.out.Data, boolFlag(r.out.Failed), r.id)
		}
		// The results are worth storing even when the worker is
		// stopping; while Redis is away it keeps trying for a lease at
		// least, after which the lines may be taken over anyway.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(w.opts.Lease, 10*time.Second))
		var stored []int64
		err := retry(sctx, func() error {
			var err error
			stored, err = storeScript.Run(sctx, w.b.rdb, []string{w.b.keys.results, w.b.keys.lines, w.b.keys.meta}, args...).Int64Slice()
			return err
		})
		cancel()
		for i, r := range chunk {
			r.err = err
			if err == nil && i < len(stored) {
				r.fresh = stored[i] == 1
			}
			close(r.done)
		}
	}
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
		vals, err = w.b.rdb.HMGet(ctx, w.b.keys.meta, "sealed", "done").Result()
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("fleet: batch %s: reading counters: %w", w.b.name, err)
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
			_ = w.renew(ctx)
		}
	}
}

func (w *worker) renew(ctx context.Context) error {
	args := []any{w.opts.Name, w.opts.Lease.Milliseconds()}
	w.mu.Lock()
	for id := range w.held {
		args = append(args, id)
	}
	w.mu.Unlock()
	// A renewal that comes later than the lease is of no use.
	ctx, cancel := context.WithTimeout(ctx, w.opts.Lease)
	defer cancel()
	return leaseScript.Run(ctx, w.b.rdb, []string{w.b.keys.lines, w.b.keys.workers}, args...).Err()
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
