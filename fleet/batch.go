package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/redact"
)

// Batch is one batch of requests on Redis Streams, shared by every worker
// that names it: any number of processes on any number of machines take
// its lines, fetch them and store the results, and [Batch.Results] reads
// them back in input order.
//
// Keys, with P = "courier:{FLEET}:batch:NAME:" for a batch of a fleet
// ([OpenFleetBatch]), or "courier:{NAME}:batch:" for one of no fleet
// ([OpenBatch]):
//
//	P lines    a stream: one entry per input line that is a request, with
//	           the ID "N-0" for line N (so adding a line twice is refused
//	           by Redis itself) and the fields hash, text and keys
//	P results  a hash: line number -> the stored result; first one wins;
//	           and for a line done page by page ([Batch.WorkPages]), its
//	           pages and its progress (see [Pager])
//	P meta     a hash: total (entries added), last (highest line added),
//	           sealed (the total, once every line is in), keys ("1" when
//	           POST/PATCH lines get idempotency keys), done, failed,
//	           malformed (entries that are not lines, see below), base
//	           and basehash (the base URL the batch was made for: the
//	           URL redacted, and a digest of it whole)
//	P workers  a sorted set: worker name -> when its lease ends (Redis's
//	           clock, in milliseconds)
//
// Every key has the batch's TTL ([BatchOptions.TTL]), set again by every
// write: a batch nobody works on or adds to for that long is gone, and no
// command makes a key of a batch without it (a worker never creates a
// batch; [Batch.Add] does).
//
// Only an entry with the ID "N-0", N between 1 and the highest line
// added, with the fields hash and text, is a line. Any other (one written
// by hand, "5-1" after "5-0", an auto-ID, one without its fields) is
// skipped by workers and by [Batch.Results], acknowledged, and counted as
// malformed in [Status.Malformed]: it never runs, never counts as done,
// never stalls a reader.
//
// Workers read the stream through the consumer group "workers". An entry
// a worker reads is pending for it until its result is stored and the
// entry acknowledged, which one script does at once (see [Batch.Work]).
// Holding an entry is a lease: the worker renews it while it works, and an
// entry idle for longer than the lease (its worker died) is taken over by
// another worker with XAUTOCLAIM.
//
// A script that finds the batch's keys gone (evicted, expired, flushed)
// writes nothing and fails with [ErrBatchGone].
//
// Batch is safe for concurrent use. The zero value is not usable; call
// [OpenFleetBatch] or [OpenBatch].
type Batch struct {
	rdb   redis.UniversalClient
	name  string
	fleet string // "" for a batch of no fleet
	opts  BatchOptions
	base  string // BatchOptions.BaseURL redacted, for messages
	hash  string // a digest of BatchOptions.BaseURL; "" when it is empty
	keys  batchKeys
}

type batchKeys struct {
	lines, results, meta, workers string
}

// all is every key of the batch, in the order addScript and sealScript take them.
func (k batchKeys) all() []string { return []string{k.lines, k.meta, k.results, k.workers} }

// group is the consumer group of every batch's workers.
const group = "workers"

// DefaultBatchTTL is how long a batch's keys live after its last write,
// unless [BatchOptions.TTL] says otherwise.
const DefaultBatchTTL = 7 * 24 * time.Hour

// BatchOptions says what a batch is for and how long it lives. The zero
// value gives the defaults. It is a plain value: the open functions keep a
// copy.
type BatchOptions struct {
	// BaseURL is the API the batch's lines are requests to. The first
	// [Batch.Add] records it with the batch; an Add or a [Batch.Work]
	// with another fails with a [*BaseURLError] naming both, so that a
	// worker never sends a batch's lines (and its own token) to another
	// API. If empty, nothing is recorded or checked.
	BaseURL string
	// TTL is how long the batch's keys live after its last write (an
	// Add, a stored result, a worker's lease renewal). If zero,
	// [DefaultBatchTTL].
	TTL time.Duration
}

// ErrNoBatch matches the error of [Batch.Work] (and of [Batch.Seal]) on a
// batch that does not exist: no line was ever added to it, in this fleet
// and on this Redis.
var ErrNoBatch = errors.New("fleet: no such batch")

// ErrBatchGone matches the errors of a batch whose keys vanished from
// Redis while it was worked on: evicted under maxmemory, expired past its
// TTL, or flushed. The script that finds them gone writes nothing.
var ErrBatchGone = errors.New("fleet: the batch's keys are gone from Redis (evicted, expired or flushed)")

// BaseURLError reports a batch opened for another base URL than the one
// it was made for. Both URLs have been through [redact.RawURL]. It
// is a plain value, made by [Batch.Add] and [Batch.Work].
type BaseURLError struct {
	Batch string
	Made  string // the base URL the batch was made for
	Got   string // the base URL it was opened with
}

func (e *BaseURLError) Error() string {
	return fmt.Sprintf("fleet: batch %s was made for %s, not for %s: its lines are requests to that API", e.Batch, e.Made, e.Got)
}

// OpenFleetBatch returns the batch name of the fleet fleetName (both
// checked by [CheckName]) on rdb: batches of two fleets never share a
// key, whatever their names. It does not contact Redis: a batch exists
// once [Batch.Add] has been called. The caller keeps ownership of rdb.
func OpenFleetBatch(rdb redis.UniversalClient, fleetName, name string, opts BatchOptions) (*Batch, error) {
	if err := CheckName(fleetName); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return openBatch(rdb, fleetName, name, keyPrefix(fleetName)+"batch:"+name+":", opts)
}

// OpenBatch returns the named batch (see [CheckName]) of no fleet on rdb,
// with the default [BatchOptions]: its keys are "courier:{NAME}:batch:*",
// where every batch was before batches were scoped to a fleet, so such a
// batch is shared by every program that names it on this Redis. A program
// that runs as part of a fleet uses [OpenFleetBatch]. It does not contact
// Redis. The caller keeps ownership of rdb.
func OpenBatch(rdb redis.UniversalClient, name string) (*Batch, error) {
	return openBatch(rdb, "", name, keyPrefix(name)+"batch:", BatchOptions{})
}

func openBatch(rdb redis.UniversalClient, fleetName, name, p string, opts BatchOptions) (*Batch, error) {
	if err := checkName("batch name", name); err != nil {
		return nil, err
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultBatchTTL
	}
	b := &Batch{rdb: rdb, name: name, fleet: fleetName, opts: opts, keys: batchKeys{
		lines: p + "lines", results: p + "results", meta: p + "meta", workers: p + "workers",
	}}
	if opts.BaseURL != "" {
		h := sha256.Sum256([]byte(opts.BaseURL))
		b.hash, b.base = hex.EncodeToString(h[:16]), redact.RawURL(opts.BaseURL)
	}
	return b, nil
}

func (b *Batch) ttl() string { return strconv.FormatInt(b.opts.TTL.Milliseconds(), 10) }

// where names the batch in messages: its name, and its fleet's.
func (b *Batch) where() string {
	if b.fleet == "" {
		return b.name
	}
	return b.name + " (fleet " + b.fleet + ")"
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

// addScript makes the batch when it is not there yet (its consumer group,
// its meta, its base URL) and adds lines to the stream, each as entry
// "N-0". A line at or below the highest one added before must be there
// already with the same hash, and a sealed batch takes no line past its
// last: adding the same input again adds nothing, and a changed input is
// refused. Every key gets the TTL.
//
// KEYS: lines, meta, results, workers. ARGV: keys flag, TTL in ms, base
// URL digest, base URL redacted, then triples of line number, hash, text.
// Returns {added, 0}, {-1, line} for a line that differs, or {-2, base}
// when the batch was made for another base URL.
var addScript = redis.NewScript(aclPrelude + `
local no = denied({'XGROUP', 'CREATE', KEYS[1], 'workers', '0', 'MKSTREAM'},
  {'XADD', KEYS[1], '1-0', 'hash', '0', 'text', '0', 'keys', '0'},
  {'HSET', KEYS[2], 'last', '0'}, {'HINCRBY', KEYS[2], 'total', '0'},
  {'PEXPIRE', KEYS[1], ARGV[2]}, {'PEXPIRE', KEYS[2], ARGV[2]}, {'PEXPIRE', KEYS[3], ARGV[2]}, {'PEXPIRE', KEYS[4], ARGV[2]})
if no then return redis.error_reply(no) end
local made = redis.call('HGET', KEYS[2], 'basehash')
if made and ARGV[3] ~= '' and made ~= ARGV[3] then
  return {-2, redis.call('HGET', KEYS[2], 'base') or ''}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'workers', '0', 'MKSTREAM')
end
local top = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
local sealed = redis.call('HGET', KEYS[2], 'sealed')
local added = 0
for i = 5, #ARGV, 3 do
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
if not made and ARGV[3] ~= '' then redis.call('HSET', KEYS[2], 'basehash', ARGV[3], 'base', ARGV[4]) end
redis.call('HINCRBY', KEYS[2], 'total', added)
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return {added, 0}
`)

// Add adds lines to the batch, in input order, and makes the batch (its
// keys, its consumer group, its base URL) when it is not there yet, even
// with no line. Adding lines that are there already adds nothing; a line
// that differs from the one there fails with a [*ChangedError], and a
// batch made for another base URL with a [*BaseURLError].
// idempotencyKeys marks the batch so that every worker gives its POST and
// PATCH lines idempotency keys.
func (b *Batch) Add(ctx context.Context, lines []Line, idempotencyKeys bool) error {
	for i, l := range lines {
		if l.N < 1 {
			return fmt.Errorf("fleet: batch %s: adding lines: lines[%d] has number %d; lines are numbered from 1", b.name, i, l.N)
		}
	}
	const chunk = 500 // lines per script call: short scripts keep Redis responsive
	for first := true; first || len(lines) > 0; first = false {
		n := min(chunk, len(lines))
		args := make([]any, 0, 4+3*n)
		args = append(args, boolFlag(idempotencyKeys), b.ttl(), b.hash, b.base)
		for _, l := range lines[:n] {
			args = append(args, l.N, l.Hash, l.Text)
		}
		var res []any
		err := retry(ctx, func() error {
			var err error
			res, err = addScript.Run(ctx, b.rdb, b.keys.all(), args...).Slice()
			return err
		})
		if err != nil {
			return fmt.Errorf("fleet: batch %s: adding lines: %w", b.name, err)
		}
		code, _ := res[0].(int64)
		switch code {
		case -1:
			line, _ := res[1].(int64)
			return &ChangedError{Batch: b.name, Line: int(line)}
		case -2:
			made, _ := res[1].(string)
			return &BaseURLError{Batch: b.name, Made: made, Got: b.base}
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

// sealScript marks the batch complete with ARGV[1] lines. Sealing again
// with the same count does nothing; another count is refused. It answers
// 1 when sealed, 0 when refused, -1 when the batch does not exist.
//
// KEYS: lines, meta, results, workers. ARGV: the count, TTL in ms.
var sealScript = redis.NewScript(aclPrelude + `
local no = denied({'HSET', KEYS[2], 'sealed', ARGV[1]}, {'PEXPIRE', KEYS[1], ARGV[2]}, {'PEXPIRE', KEYS[2], ARGV[2]})
if no then return redis.error_reply(no) end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local sealed = redis.call('HGET', KEYS[2], 'sealed')
if sealed then
  if sealed == ARGV[1] then return 1 end
  return 0
end
if (redis.call('HGET', KEYS[2], 'total') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'sealed', ARGV[1])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 1
`)

// Seal says every line of the batch has been added: total is their count.
// Workers finish once that many results are stored. Sealing a batch again
// with another count fails with a [*ChangedError]; sealing one no Add made
// fails with [ErrNoBatch].
func (b *Batch) Seal(ctx context.Context, total int) error {
	var ok int64
	err := retry(ctx, func() error {
		var err error
		ok, err = sealScript.Run(ctx, b.rdb, b.keys.all(), strconv.Itoa(total), b.ttl()).Int64()
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: batch %s: sealing: %w", b.name, err)
	}
	switch ok {
	case -1:
		return fmt.Errorf("fleet: batch %s: sealing: %w", b.where(), ErrNoBatch)
	case 1:
		return nil
	}
	return &ChangedError{Batch: b.name}
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
	Malformed       int64 // entries skipped: not lines Add wrote (see [Batch])
	IdempotencyKeys bool
	BaseURL         string   // the base URL it was made for, redacted; "" when not recorded
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
		st.Malformed, _ = strconv.ParseInt(m["malformed"], 10, 64)
		st.BaseURL = m["base"]
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
	// Pages, for a line done page by page ([Batch.WorkPages]) that has
	// its result, holds the pages stored before it, in order: the line's
	// pages are Pages, then Data (its last page, or empty when the pages
	// ended on one stored before it). Nil for a line of one result.
	Pages [][]byte
}

// Results returns up to count lines of the batch that come after line
// after, in input order, each with its result if it has one. An empty
// answer means no line after that one has been added yet. Entries that
// are not lines (see [Batch]) are left out.
func (b *Batch) Results(ctx context.Context, after, count int) ([]Result, error) {
	var out []Result
	err := retry(ctx, func() error {
		out = out[:0]
		last, err := b.lastLine(ctx)
		if err != nil {
			return err
		}
		// From line after+1's entry on: an entry "after-1" (written by
		// hand) is not read again and again as line after.
		start := strconv.Itoa(after+1) + "-0"
		for len(out) < count {
			entries, err := b.rdb.XRangeN(ctx, b.keys.lines, start, "+", int64(count-len(out))).Result()
			if err != nil {
				return err
			}
			if len(entries) == 0 {
				break
			}
			for _, e := range entries {
				if l, ok := lineFromEntry(e, last); ok {
					out = append(out, Result{Line: l.N})
				}
			}
			start = "(" + entries[len(entries)-1].ID
		}
		if len(out) == 0 {
			return nil
		}
		// Each line's result, and its progress when it was done page
		// by page.
		fields := make([]string, 0, 2*len(out))
		for _, r := range out {
			fields = append(fields, strconv.Itoa(r.Line), strconv.Itoa(r.Line)+".p")
		}
		vals, err := b.rdb.HMGet(ctx, b.keys.results, fields...).Result()
		if err != nil {
			return err
		}
		progress := make([]any, len(out))
		for i := range out {
			if s, ok := vals[2*i].(string); ok {
				out[i].Data = []byte(s)
			}
			progress[i] = vals[2*i+1]
		}
		return b.pagesOf(ctx, out, progress)
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: batch %s: reading results: %w", b.name, err)
	}
	return out, nil
}

// lastLine reads the highest line number added.
func (b *Batch) lastLine(ctx context.Context) (int, error) {
	v, err := b.rdb.HGet(ctx, b.keys.meta, "last").Result()
	if err == redis.Nil {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(v)
}

// lineOf reads the line number of entry ID "N-0"; ok is false for an ID
// of another form ("N-1", say).
func lineOf(id string) (n int, ok bool) {
	ms, seq, _ := strings.Cut(id, "-")
	n, err := strconv.Atoi(ms)
	return n, err == nil && seq == "0"
}

// lineFromEntry reads a stream entry, and reports whether it is a line:
// an ID "N-0" with N from 1 to last, and the fields Add writes.
func lineFromEntry(m redis.XMessage, last int) (Line, bool) {
	n, ok := lineOf(m.ID)
	text, ok1 := m.Values["text"].(string)
	hash, ok2 := m.Values["hash"].(string)
	keys, _ := m.Values["keys"].(string)
	return Line{N: n, Text: text, Hash: hash, IdempotencyKeys: keys == "1"}, ok && ok1 && ok2 && n >= 1 && n <= last
}

// Remove deletes the batch: its lines, results, counters and workers.
func (b *Batch) Remove(ctx context.Context) error {
	err := retry(ctx, func() error {
		return b.rdb.Del(ctx, b.keys.all()...).Err()
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

// EvictionRisk reads Redis's maxmemory-policy and reports whether it may
// evict a batch's keys when Redis is full: every policy but noeviction
// may, the volatile-* ones included, since every key of a batch has a TTL
// ([BatchOptions.TTL]). A batch whose keys are evicted loses its lines and
// results ([ErrBatchGone]). The error is Redis's when it does not let
// the user read its configuration (CONFIG is often refused by ACLs or
// renamed by managed services).
func EvictionRisk(ctx context.Context, rdb redis.UniversalClient) (policy string, risky bool, err error) {
	m, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return "", false, fmt.Errorf("fleet: reading maxmemory-policy: %w", err)
	}
	policy = m["maxmemory-policy"]
	return policy, policy != "" && policy != "noeviction", nil
}
