package fleet_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
)

// The tests of this file pin what a batch does when Redis or its stream
// is not what Add left: paused, full, flushed, edited by hand, shared by
// two fleets.

func fleetBatch(t *testing.T, rdb *redis.Client, fleetName, name string, opts fleet.BatchOptions) *fleet.Batch {
	t.Helper()
	b, err := fleet.OpenFleetBatch(rdb, fleetName, name, opts)
	require.NoError(t, err)
	return b
}

func workCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A worker for a misspelt batch used to wait silently, leaving behind a
// stream key with no TTL (made by XGROUP CREATE MKSTREAM) that
// `batch rm` then refused to delete, as the batch "did not exist".
func TestBatchWorkerForAMissingBatchFailsAndMakesNoKey(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	ctx := workCtx(t)
	b := fleetBatch(t, rdb, "crawl", "orders-27", fleet.BatchOptions{})
	var h echo
	start := time.Now()
	_, err := b.Work(ctx, fleet.WorkerOptions{Lease: time.Second}, h.handle)
	require.ErrorIs(t, err, fleet.ErrNoBatch)
	assert.ErrorContains(t, err, "orders-27")
	assert.ErrorContains(t, err, "crawl")
	assert.Less(t, time.Since(start), 5*time.Second, "at once")

	// With WaitForBatch it waits, and still makes no key.
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = b.Work(wctx, fleet.WorkerOptions{Lease: 300 * time.Millisecond, WaitForBatch: true}, h.handle)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "a worker makes no key")
	require.ErrorIs(t, b.Seal(ctx, 0), fleet.ErrNoBatch, "sealing makes no key either")
	keys, err = rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys)
}

// Every key of a batch has a TTL, whoever wrote it last.
func TestBatchKeysAllHaveTheTTL(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	ctx := workCtx(t)
	b := fleetBatch(t, rdb, "crawl", "b", fleet.BatchOptions{TTL: time.Hour})
	require.NoError(t, b.Add(ctx, lines(1, 30), false))
	require.NoError(t, b.Seal(ctx, 30))
	var h echo
	_, err := b.Work(ctx, fleet.WorkerOptions{Concurrency: 4, Lease: time.Second}, h.handle)
	require.NoError(t, err)
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"courier:{crawl}:batch:b:lines", "courier:{crawl}:batch:b:meta",
		"courier:{crawl}:batch:b:results"}, keys, "the workers set is empty once every worker left")
	for _, k := range keys {
		ttl, err := rdb.PTTL(ctx, k).Result()
		require.NoError(t, err)
		assert.Greater(t, ttl, 50*time.Minute, k)
		assert.LessOrEqual(t, ttl, time.Hour, k)
	}
	// An empty input still makes a batch, which is finished at once.
	e := fleetBatch(t, rdb, "crawl", "empty", fleet.BatchOptions{})
	require.NoError(t, e.Add(ctx, nil, false))
	require.NoError(t, e.Seal(ctx, 0))
	st, err := e.Status(ctx)
	require.NoError(t, err)
	assert.True(t, st.Finished())
}

// Batch keys did not include the fleet: a worker of fleet A joined fleet
// B's batch of the same name, sent B's lines to A's API, and stored the
// answers as B's results; removing A's batch removed B's.
func TestBatchesOfTwoFleetsNeverMeet(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	ctx := workCtx(t)
	a := fleetBatch(t, rdb, "fleet-a", "orders", fleet.BatchOptions{BaseURL: "https://a.example/v1?api_key=hunter2"})
	b := fleetBatch(t, rdb, "fleet-b", "orders", fleet.BatchOptions{BaseURL: "https://b.example"})
	require.NoError(t, a.Add(ctx, lines(1, 5), false))
	require.NoError(t, a.Seal(ctx, 5))

	var h echo
	_, err := b.Work(ctx, fleet.WorkerOptions{Lease: time.Second}, h.handle)
	require.ErrorIs(t, err, fleet.ErrNoBatch, "fleet B has no batch of that name")
	require.NoError(t, b.Remove(ctx))
	st, err := a.Status(ctx)
	require.NoError(t, err)
	assert.True(t, st.Exists, "removing B's batch left A's alone")
	assert.Equal(t, "https://a.example/v1", st.BaseURL, "recorded, redacted")

	// A worker of fleet A with another base URL refuses the batch.
	other := fleetBatch(t, rdb, "fleet-a", "orders", fleet.BatchOptions{BaseURL: "https://b.example"})
	_, err = other.Work(ctx, fleet.WorkerOptions{Lease: time.Second}, h.handle)
	var be *fleet.BaseURLError
	require.ErrorAs(t, err, &be)
	assert.ErrorContains(t, err, "https://a.example/v1")
	assert.ErrorContains(t, err, "https://b.example")
	assert.NotContains(t, err.Error(), "hunter2")
	require.ErrorAs(t, other.Add(ctx, lines(1, 5), false), &be, "nor may it add lines")
	assert.Empty(t, h.calls, "no line was handled")

	// The same base URL works, and so does the batch of no fleet.
	same := fleetBatch(t, rdb, "fleet-a", "orders", fleet.BatchOptions{BaseURL: "https://a.example/v1?api_key=hunter2"})
	ws, err := same.Work(ctx, fleet.WorkerOptions{Lease: time.Second}, h.handle)
	require.NoError(t, err)
	assert.EqualValues(t, 5, ws.Stored)
	legacy, err := fleet.OpenBatch(rdb, "orders")
	require.NoError(t, err)
	st, err = legacy.Status(ctx)
	require.NoError(t, err)
	assert.False(t, st.Exists, "the batch of no fleet is another batch")
}

// Hand-written stream entries: "5-1" after "5-0" made collect rewrite line
// 5 forever; an entry without the fields was acknowledged and never
// answered, so collect --wait never returned; an auto-ID entry was run and
// counted (done 6 of 5, pending -1).
func TestBatchSkipsEntriesThatAreNotLines(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	ctx := workCtx(t)
	b := fleetBatch(t, rdb, "crawl", "b", fleet.BatchOptions{})
	stream := "courier:{crawl}:batch:b:lines"
	xadd := func(id string, fields ...any) {
		t.Helper()
		require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: id, Values: fields}).Err())
	}
	require.NoError(t, b.Add(ctx, lines(1, 3), false))
	xadd("4-0", "note", "no hash, no text") // in range once line 5 is in
	require.NoError(t, b.Add(ctx, lines(5, 6), false))
	require.NoError(t, b.Seal(ctx, 5))
	xadd("6-1", "hash", "h", "text", "/items/6-again")
	xadd("*", "hash", "h", "text", "/auto")

	var h echo
	ws, err := b.Work(ctx, fleet.WorkerOptions{Concurrency: 2, Lease: time.Second}, h.handle)
	require.NoError(t, err)
	assert.EqualValues(t, 5, ws.Stored)
	assert.EqualValues(t, 3, ws.Malformed)
	assert.Len(t, h.calls, 5, "only lines ran")
	for _, n := range []int{1, 2, 3, 5, 6} {
		assert.Equal(t, 1, h.calls[n], "line %d", n)
	}
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 5, st.Done)
	assert.EqualValues(t, 5, st.Total)
	assert.EqualValues(t, 3, st.Malformed)
	assert.True(t, st.Finished())
	assert.Zero(t, st.InFlight, "the skipped entries were acknowledged")

	rs := allResults(t, b)
	var got []int
	for _, r := range rs {
		got = append(got, r.Line)
	}
	assert.Equal(t, []int{1, 2, 3, 5, 6}, got, "each line once, in order")
	rs, err = b.Results(ctx, 6, 10)
	require.NoError(t, err)
	assert.Empty(t, rs, "nothing after the last line")

	// A second worker does not count them again.
	ws, err = b.Work(ctx, fleet.WorkerOptions{Lease: time.Second}, h.handle)
	require.NoError(t, err)
	st, err = b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 3, st.Malformed)
}

// After FLUSHALL a worker went on writing into the emptied Redis: a meta
// hash with done counts and no total, pending -32. It stops now, saying
// the batch's keys are gone, and writes nothing.
func TestBatchWorkerStopsWhenTheBatchIsFlushed(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	ctx := workCtx(t)
	b := fleetBatch(t, rdb, "crawl", "b", fleet.BatchOptions{})
	require.NoError(t, b.Add(ctx, lines(1, 200), false))
	require.NoError(t, b.Seal(ctx, 200))
	var once sync.Once
	h := func(_ context.Context, l fleet.Line) fleet.Outcome {
		once.Do(func() { require.NoError(t, rdb.FlushAll(context.Background()).Err()) })
		return fleet.Outcome{Data: []byte(l.Text)}
	}
	_, err := b.Work(ctx, fleet.WorkerOptions{Concurrency: 4, Lease: time.Second}, h)
	require.ErrorIs(t, err, fleet.ErrBatchGone)
	assert.ErrorContains(t, err, "evicted, expired or flushed")
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "nothing written into the emptied Redis")

	// A stream deleted under a meta that is still there: NOGROUP.
	c := fleetBatch(t, rdb, "crawl", "c", fleet.BatchOptions{})
	require.NoError(t, c.Add(ctx, lines(1, 3), false))
	require.NoError(t, rdb.Del(ctx, "courier:{crawl}:batch:c:lines").Err())
	_, err = c.Work(ctx, fleet.WorkerOptions{Lease: time.Second}, h)
	require.ErrorIs(t, err, fleet.ErrBatchGone)
}

// A result that could not be stored held its line forever: the worker
// dropped the result but kept renewing the line's lease, so no worker
// tried it again and the batch never finished. The line is released now,
// and tried again. Here the store fails because the results key was made
// the wrong type (WRONGTYPE), until the first failure is reported.
func TestBatchReleasesALineWhoseResultCouldNotBeStored(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	ctx := workCtx(t)
	b := fleetBatch(t, rdb, "crawl", "b", fleet.BatchOptions{})
	require.NoError(t, b.Add(ctx, lines(1, 8), false))
	require.NoError(t, b.Seal(ctx, 8))
	results := "courier:{crawl}:batch:b:results"
	require.NoError(t, rdb.Set(ctx, results, "not a hash", 0).Err())
	var e echo
	var mu sync.Mutex
	failed := map[int]int{}
	var fix sync.Once
	ws, err := b.Work(ctx, fleet.WorkerOptions{
		Concurrency: 1, Lease: 300 * time.Millisecond,
		OnStoreError: func(line int, err error) {
			mu.Lock()
			failed[line]++
			mu.Unlock()
			assert.ErrorContains(t, err, "WRONGTYPE")
			fix.Do(func() { assert.NoError(t, rdb.Del(context.Background(), results).Err()) })
		},
	}, e.handle)
	require.NoError(t, err, "the batch finished")
	require.NotEmpty(t, failed, "the failure was reported")
	var n int64
	for line, c := range failed {
		n += int64(c)
		assert.GreaterOrEqual(t, e.calls[line], 2, "line %d was tried again", line)
	}
	assert.Equal(t, n, ws.NotStored, "each failure counted once")
	assert.Len(t, allResults(t, b), 8)
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 8, st.Done)
}

// A Redis that refuses every write (maxmemory with noeviction) makes the
// worker stop with the cause, its lines released for the next worker.
func TestBatchWorkerStopsWhenStoresKeepFailing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Args: []string{"--maxmemory-policy", "noeviction"}})
	rdb := client(t, srv)
	ctx := workCtx(t)
	b := fleetBatch(t, rdb, "crawl", "b", fleet.BatchOptions{})
	require.NoError(t, b.Add(ctx, lines(1, 20), false))
	require.NoError(t, b.Seal(ctx, 20))
	var full sync.Once
	h := func(_ context.Context, l fleet.Line) fleet.Outcome {
		full.Do(func() { require.NoError(t, rdb.ConfigSet(context.Background(), "maxmemory", "1").Err()) })
		return fleet.Outcome{Data: []byte(l.Text)}
	}
	_, err := b.Work(ctx, fleet.WorkerOptions{Concurrency: 4, Lease: 200 * time.Millisecond}, h)
	require.Error(t, err)
	assert.ErrorContains(t, err, "OOM")

	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())
	var e echo
	_, err = b.Work(ctx, fleet.WorkerOptions{Concurrency: 4, Lease: 200 * time.Millisecond}, e.handle)
	require.NoError(t, err)
	assert.Len(t, allResults(t, b), 20, "the next worker did every line")
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 20, st.Done)
}

func TestEvictionRisk(t *testing.T) {
	for policy, risky := range map[string]bool{
		"noeviction": false, "allkeys-lru": true, "volatile-lru": true, "volatile-ttl": true, "allkeys-random": true,
	} {
		t.Run(policy, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{Args: []string{"--maxmemory-policy", policy}})
			got, r, err := fleet.EvictionRisk(context.Background(), client(t, srv))
			require.NoError(t, err)
			assert.Equal(t, policy, got)
			assert.Equal(t, risky, r, "batch keys have a TTL, so volatile-* evict them too")
		})
	}
}
