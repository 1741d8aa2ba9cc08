package fleet

// Lines done page by page: [Batch.WorkPages] and its [Pager].
//
// A page of line N stored before the line ends is the field "N.K" of the
// results hash (K from 1), and the line's progress the field "N.p":
// "K:STATE", the count of pages stored and what the handler needs to
// carry on after them (fetch keeps the next page's URL there). Both are
// written by pageScript, only while the worker holds the line; the
// line's last page is its result, field "N", written by storeScript,
// which finishes the line. The fields live in the results hash, so they
// have the batch's TTL and go with it.

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/courier-go/courier/errors"
)

// ErrLeaseLost matches the error of [Pager.Store] when the worker no
// longer holds the line: its lease lapsed and another worker took it
// over, or it has its result. The handler should give the line up: its
// [Outcome] is not stored.
var ErrLeaseLost = errors.New("fleet: the line is no longer this worker's (its lease lapsed, and another worker took it over)")

// pageScript stores one page of a line and the line's progress (how many
// pages are stored, and what the handler needs to carry on) in one step,
// only while the worker holds the line: its entry is pending for this
// worker, the line has no result yet, and exactly the pages before this
// one are stored. It renews the entry's lease and the batch's TTL. A
// batch whose meta is gone gets nothing written: it fails with GONE.
//
// KEYS: results, lines, meta, workers. ARGV: TTL in ms, worker, entry ID,
// line, page number, page result, progress state. Returns 1 when stored,
// 0 when the line is no longer this worker's.
var pageScript = redis.NewScript(aclPrelude + `
local no = denied({'HSET', KEYS[1], '0', '0'}, {'XCLAIM', KEYS[2], 'workers', ARGV[2], '0', '0-1', 'JUSTID'},
  {'PEXPIRE', KEYS[1], ARGV[1]}, {'PEXPIRE', KEYS[2], ARGV[1]},
  {'PEXPIRE', KEYS[3], ARGV[1]}, {'PEXPIRE', KEYS[4], ARGV[1]})
if no then return redis.error_reply(no) end
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('GONE the batch has no meta or no stream')
end
local held = redis.call('XPENDING', KEYS[2], 'workers', ARGV[3], ARGV[3], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then return 0 end
local p = redis.call('HGET', KEYS[1], ARGV[4] .. '.p')
local have = 0
if p then have = tonumber(string.match(p, '^(%d+)')) end
if have + 1 ~= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[4] .. '.' .. ARGV[5], ARGV[6], ARGV[4] .. '.p', ARGV[5] .. ':' .. ARGV[7])
redis.call('XCLAIM', KEYS[2], 'workers', ARGV[2], 0, ARGV[3], 'JUSTID')
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
`)

// Pager is a [PageHandler]'s hold on its line: it reads the pages stored
// by the workers that held the line before, and stores the line's pages
// one by one. It is for the one call of the handler it is given to, and
// for one goroutine at a time; the zero Pager is not usable.
type Pager struct {
	w    *worker
	id   string // the line's entry
	line int
	// stored is how many pages of the line are stored, as this Pager
	// knows; lost is set when the line went to another worker. Both are
	// owned by the handler's goroutine, and read by run after it returns.
	stored int
	lost   bool
	failed error // a read or a store Redis did not do: the line is released
}

// Resume reads the line's progress: how many of its pages are stored
// already (0 for a line started afresh) and the state stored with the
// last of them. The next page [Pager.Store] stores is page stored+1.
func (p *Pager) Resume(ctx context.Context) (stored int, state []byte, err error) {
	b := p.w.b
	var v string
	err = retry(ctx, func() error {
		var err error
		v, err = b.rdb.HGet(ctx, b.keys.results, strconv.Itoa(p.line)+".p").Result()
		return err
	})
	if err == redis.Nil {
		p.stored = 0
		return 0, nil, nil
	}
	if err != nil {
		p.failed = fmt.Errorf("fleet: batch %s: line %d: reading its progress: %w", b.name, p.line, err)
		return 0, nil, p.failed
	}
	n, st, ok := parseProgress(v)
	if !ok {
		return 0, nil, fmt.Errorf("fleet: batch %s: line %d: its progress %q is not one a worker wrote", b.name, p.line, v)
	}
	p.stored = n
	return n, st, nil
}

// parseProgress reads a "N.p" field: "K:STATE".
func parseProgress(v string) (pages int, state []byte, ok bool) {
	k, st, ok := strings.Cut(v, ":")
	n, err := strconv.Atoi(k)
	if !ok || err != nil || n < 0 {
		return 0, nil, false
	}
	return n, []byte(st), true
}

// Store stores the line's next page, data, with state (what a worker
// that takes the line over needs to carry on after it), in one step and
// only while this worker holds the line; it renews the line's lease. It
// fails with [ErrLeaseLost] when the line is another worker's now, and
// with [ErrBatchGone] when the batch's keys are gone. While Redis is
// unreachable it waits for it, for up to [WorkerOptions.StoreWait]; a
// page it could not store releases the line for another try when the
// handler returns, as a result that could not be stored does (see
// [Batch.Work]), and the handler should return then.
// The line's last page is not stored here: it is the handler's Outcome.
func (p *Pager) Store(ctx context.Context, data, state []byte) error {
	w := p.w
	if p.lost {
		return ErrLeaseLost
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.opts.StoreWait)
	defer cancel()
	var ok int64
	err := retry(sctx, func() error {
		var err error
		ok, err = pageScript.Run(sctx, w.b.rdb, w.b.storeKeys(), w.b.ttl(), w.opts.Name, p.id,
			p.line, p.stored+1, data, state).Int64()
		return err
	})
	if err != nil {
		if err = w.b.goneError(err); !errors.Is(err, ErrBatchGone) {
			err = fmt.Errorf("fleet: batch %s: line %d: storing page %d: %w", w.b.name, p.line, p.stored+1, err)
		}
		p.failed = err
		w.stored(err)
		return err
	}
	if ok != 1 {
		p.lost = true
		return ErrLeaseLost
	}
	p.stored++
	return nil
}

// pagesOf reads the pages stored before their line's result, for the
// results rs that have one; progress holds each result's "N.p" field.
func (b *Batch) pagesOf(ctx context.Context, rs []Result, progress []any) error {
	var fields []string
	for i, v := range progress {
		s, ok := v.(string)
		if !ok || rs[i].Data == nil {
			continue
		}
		n, _, ok := parseProgress(s)
		if !ok {
			continue
		}
		for k := 1; k <= n; k++ {
			fields = append(fields, strconv.Itoa(rs[i].Line)+"."+strconv.Itoa(k))
		}
		rs[i].Pages = make([][]byte, n)
	}
	if len(fields) == 0 {
		return nil
	}
	vals, err := b.rdb.HMGet(ctx, b.keys.results, fields...).Result()
	if err != nil {
		return err
	}
	j := 0
	for i := range rs {
		for k := range rs[i].Pages {
			s, _ := vals[j].(string)
			rs[i].Pages[k] = []byte(s)
			j++
		}
	}
	return nil
}
