package fleet

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/courier-go/courier/errors"
)

// Batch is one batch of requests on Redis Streams, shared by every worker
// that names it: any number of processes on any number of machines take
// its lines, fetch them and store the results, and [Batch.Results] reads
// them back in input order.
//
// Keys, with P = "courier:{NAME}:batch:":
//
//	P lines    a stream: one entry per input line that is a request, with
//	           the ID "N-0" for line N (so adding a line twice is refused
//	           by Redis itself) and the fields hash, text and keys
//	P results  a hash: line number -> the stored result; first one wins
//	P meta     a hash: total (entries added), last (highest line added),
//	           sealed (the total, once every line is in), keys ("1" when
//	           POST/PATCH lines get idempotency keys), done, failed
//	P workers  a sorted set: worker name -> when its lease ends (Redis's
//	           clock, in milliseconds)
//
// Workers read the stream through the consumer group "workers". An entry
// a worker reads is pending for it until its result is stored and the
// entry acknowledged, which one script does at once (see [Batch.Work]).
// Holding an entry is a lease: the worker renews it while it works, and an
// entry idle for longer than the lease (its worker died) is taken over by
// another worker with XAUTOCLAIM.
//
// Batch is safe for concurrent use. The zero value is not usable; call
// [OpenBatch].
type Batch struct {
	rdb  redis.UniversalClient
	name string
	keys batchKeys
}

type batchKeys struct {
	lines, results, meta, workers string
}

// group is the consumer group of every batch's workers.
const group = "workers"

// OpenBatch returns the named batch (see [CheckName]) on rdb. It does not
// contact Redis: a batch exists once lines are added to it. The caller
// keeps ownership of rdb.
func OpenBatch(rdb redis.UniversalClient, name string) (*Batch, error) {
	if err := checkName("batch name", name); err != nil {
		return nil, err
	}
	p := keyPrefix(name) + "batch:"
	return &Batch{rdb: rdb, name: name, keys: batchKeys{
		lines: p + "lines", results: p + "results", meta: p + "meta", workers: p + "workers",
	}}, nil
}

// Name returns the batch's name.
func (b *Batch) Name() string { return b.name }

// Line is one input line of a batch, a plain value. Lines count from 1:
// the zero Line is no line of any batch, and [Batch.Add] refuses it.
type Line struct {
	N    int    // 1-based line number in the input
	Text string // the line as read
	Hash string // a digest of Text, stored with its result
	// IdempotencyKeys is set on lines of a batch whose lines were added
	// asking for idempotency keys; the handler gives POST and PATCH
	// lines one. It is kept with each line, so that a worker that joined
	// before the lines were added knows it.
	IdempotencyKeys bool
}

// ChangedError reports an input that differs from the one the batch was
// made from. It is a plain value; a zero Line means the number of lines
// differs rather than one line.
type ChangedError struct {
	Batch string
	Line  int // the first line found to differ; 0 when only the count does
}

func (e *ChangedError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("batch %s: the input has another number of lines than the batch: not the input it was made from", e.Batch)
	}
	return fmt.Sprintf("batch %s: input line %d differs from the batch's: not the input it was made from", e.Batch, e.Line)
}

// addScript adds lines to the stream, each as entry "N-0". A line at or
// below the highest one added before must be there already with the same
// hash, and a sealed batch takes no line past its last: adding the same
// input again adds nothing, and a changed input is refused.
//
// KEYS: lines, meta. ARGV: keys flag, then triples of line number, hash,
// text. Returns {added, 0}, or {-1, line} for a line that differs.
var addScript = redis.NewScript(`
local top = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
local sealed = redis.call('HGET', KEYS[2], 'sealed')
local added = 0
for i = 2, #ARGV, 3 do
  local n = tonumber(ARGV[i])
  local id = ARGV[i] .. '-0'
  if n <= top then
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if #e == 0 then return {-1, n} end
    local f, h = e[1][2], nil
    for j = 1, #f, 2 do if f[j] == 'hash' then h = f[j+1] end end
    if h ~= ARGV[i+1] then return {-1, n} end
  elseif sealed then
    return {-1, n}
  else
    redis.call('XADD', KEYS[1], id, 'hash', ARGV[i+1], 'text', ARGV[i+2], 'keys', ARGV[1])
    top = n
    added = added + 1
  end
end
redis.call('HSET', KEYS[2], 'last', top)
if ARGV[1] == '1' then redis.call('HSET', KEYS[2], 'keys', '1') end
redis.call('HINCRBY', KEYS[2], 'total', added)
return {added, 0}
`)

// Add adds lines to the batch, in input order, and creates the batch and
// its consumer group when needed. Adding lines that are there already
// adds nothing; a line that differs from the one there fails with a
// [*ChangedError]. idempotencyKeys marks the batch so that every worker
// gives its POST and PATCH lines idempotency keys.
func (b *Batch) Add(ctx context.Context, lines []Line, idempotencyKeys bool) error {
	for i, l := range lines {
		if l.N < 1 {
			return fmt.Errorf("fleet: batch %s: adding lines: lines[%d] has number %d; lines are numbered from 1", b.name, i, l.N)
		}
	}
	if err := b.createGroup(ctx); err != nil {
		return err
	}
	const chunk = 500 // lines per script call: short scripts keep Redis responsive
	for len(lines) > 0 {
		n := min(chunk, len(lines))
		args := make([]any, 0, 1+3*n)
		args = append(args, boolFlag(idempotencyKeys))
		for _, l := range lines[:n] {
			args = append(args, l.N, l.Hash, l.Text)
		}
		var res []int64
		err := retry(ctx, func() error {
			var err error
			res, err = addScript.Run(ctx, b.rdb, []string{b.keys.lines, b.keys.meta}, args...).Int64Slice()
			return err
		})
		if err != nil {
			return fmt.Errorf("fleet: batch %s: adding lines: %w", b.name, err)
		}
		if res[0] < 0 {
			return &ChangedError{Batch: b.name, Line: int(res[1])}
		}
		lines = lines[n:]
	}
	return nil
}

func boolFlag(v bool) string {
	if v {
		return "1"
	}
	return "0"
}

func (b *Batch) createGroup(ctx context.Context) error {
	err := retry(ctx, func() error {
		err := b.rdb.XGroupCreateMkStream(ctx, b.keys.lines, group, "0").Err()
		if err != nil && strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: batch %s: creating the consumer group: %w", b.name, err)
	}
	return nil
}

// sealScript marks the batch complete with ARGV[1] lines. Sealing again
// with the same count does nothing; another count is refused.
var sealScript = redis.NewScript(`
local sealed = redis.call('HGET', KEYS[1], 'sealed')
if sealed then
  if sealed == ARGV[1] then return 1 end
  return 0
end
if (redis.call('HGET', KEYS[1], 'total') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'sealed', ARGV[1])
return 1
`)

// Seal says every line of the batch has been added: total is their count.
// Workers finish once that many results are stored. Sealing a batch again
// with another count fails with a [*ChangedError].
func (b *Batch) Seal(ctx context.Context, total int) error {
	if err := b.createGroup(ctx); err != nil {
		return err
	}
	var ok int64
	err := retry(ctx, func() error {
		var err error
		ok, err = sealScript.Run(ctx, b.rdb, []string{b.keys.meta}, strconv.Itoa(total)).Int64()
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: batch %s: sealing: %w", b.name, err)
	}
	if ok != 1 {
		return &ChangedError{Batch: b.name}
	}
	return nil
}

// Status is a batch's state, a plain value read by [Batch.Status]; the
// zero Status is a batch that does not exist. Pending is Total-Done once
// the batch is sealed.
type Status struct {
	Exists          bool
	Sealed          bool  // every line has been added
	Total           int64 // lines added
	Done, Failed    int64 // results stored, and those that are failures
	InFlight        int64 // entries held by workers now
	IdempotencyKeys bool
	Workers         []string // workers whose lease runs, by name
}

// Finished reports whether every line of a sealed batch has its result.
func (s Status) Finished() bool { return s.Sealed && s.Done >= s.Total }

// Status reads the batch's counters and its live workers.
func (b *Batch) Status(ctx context.Context) (Status, error) {
	var st Status
	err := retry(ctx, func() error {
		pipe := b.rdb.Pipeline()
		meta := pipe.HGetAll(ctx, b.keys.meta)
		now := pipe.Time(ctx)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		m := meta.Val()
		st = Status{Exists: len(m) > 0, Sealed: m["sealed"] != "", IdempotencyKeys: m["keys"] == "1"}
		st.Total, _ = strconv.ParseInt(m["total"], 10, 64)
		st.Done, _ = strconv.ParseInt(m["done"], 10, 64)
		st.Failed, _ = strconv.ParseInt(m["failed"], 10, 64)
		if !st.Exists {
			return nil
		}
		ms := now.Val().UnixMilli()
		workers, err := b.rdb.ZRangeByScore(ctx, b.keys.workers, &redis.ZRangeBy{Min: strconv.FormatInt(ms, 10), Max: "+inf"}).Result()
		if err != nil {
			return err
		}
		st.Workers = workers
		pend, err := b.rdb.XPending(ctx, b.keys.lines, group).Result()
		if err != nil && !strings.HasPrefix(err.Error(), "NOGROUP") {
			return err
		}
		if pend != nil {
			st.InFlight = pend.Count
		}
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("fleet: batch %s: status: %w", b.name, err)
	}
	return st, nil
}

// Result is a line's stored result, or nil Data when it has none yet. It is
// a plain value, and [Batch.Results] gives every call results of its own;
// the zero Result is no line's (lines count from 1).
type Result struct {
	Line int
	Data []byte
}

// Results returns up to count lines of the batch that come after line
// after, in input order, each with its result if it has one. An empty
// answer means no line after that one has been added yet.
func (b *Batch) Results(ctx context.Context, after, count int) ([]Result, error) {
	var out []Result
	err := retry(ctx, func() error {
		out = out[:0]
		entries, err := b.rdb.XRangeN(ctx, b.keys.lines, "("+strconv.Itoa(after)+"-0", "+", int64(count)).Result()
		if err != nil || len(entries) == 0 {
			return err
		}
		fields := make([]string, len(entries))
		for i, e := range entries {
			n, _ := lineOf(e.ID)
			out = append(out, Result{Line: n})
			fields[i] = strconv.Itoa(n)
		}
		vals, err := b.rdb.HMGet(ctx, b.keys.results, fields...).Result()
		if err != nil {
			return err
		}
		for i, v := range vals {
			if s, ok := v.(string); ok {
				out[i].Data = []byte(s)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: batch %s: reading results: %w", b.name, err)
	}
	return out, nil
}

// lineOf reads the line number of entry ID "N-0".
func lineOf(id string) (int, error) {
	ms, _, _ := strings.Cut(id, "-")
	return strconv.Atoi(ms)
}

// Remove deletes the batch: its lines, results, counters and workers.
func (b *Batch) Remove(ctx context.Context) error {
	err := retry(ctx, func() error {
		return b.rdb.Del(ctx, b.keys.lines, b.keys.results, b.keys.meta, b.keys.workers).Err()
	})
	if err != nil {
		return fmt.Errorf("fleet: batch %s: removing: %w", b.name, err)
	}
	return nil
}

// retry runs op until it succeeds, fails with an answer from Redis, or ctx
// ends. While Redis cannot be reached (restarting, say) it waits and tries
// again: a batch outlives a Redis restart, and everything it does is safe
// to run twice.
func retry(ctx context.Context, op func() error) error {
	wait := 20 * time.Millisecond
	for {
		err := op()
		if err == nil || !isConnError(err) || errors.Is(err, redis.Nil) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		if sleep(ctx, jitter(wait/2, wait)) != nil {
			return err
		}
		wait = min(2*wait, time.Second)
	}
}
