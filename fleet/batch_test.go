package fleet_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
)

func newBatch(t *testing.T, srv *redistest.Server, name string) (*fleet.Batch, *redis.Client) {
	t.Helper()
	rdb, err := fleet.NewClient(srv.URL())
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })
	b, err := fleet.OpenBatch(rdb, name)
	require.NoError(t, err)
	return b, rdb
}

func lines(from, to int) []fleet.Line {
	var ls []fleet.Line
	for n := from; n <= to; n++ {
		text := "/items/" + strconv.Itoa(n)
		ls = append(ls, fleet.Line{N: n, Text: text, Hash: "h" + text})
	}
	return ls
}

// echo is a handler that stores the line's text and counts its calls.
type echo struct {
	mu    sync.Mutex
	calls map[int]int
}

func (e *echo) handle(_ context.Context, l fleet.Line) fleet.Outcome {
	e.mu.Lock()
	if e.calls == nil {
		e.calls = map[int]int{}
	}
	e.calls[l.N]++
	e.mu.Unlock()
	return fleet.Outcome{Data: []byte(l.Text)}
}

// allResults reads every result in order and checks each line has one.
func allResults(t *testing.T, b *fleet.Batch) []fleet.Result {
	t.Helper()
	var out []fleet.Result
	after := 0
	for {
		rs, err := b.Results(context.Background(), after, 100)
		require.NoError(t, err)
		if len(rs) == 0 {
			return out
		}
		for _, r := range rs {
			require.NotNil(t, r.Data, "line %d has a result", r.Line)
		}
		out = append(out, rs...)
		after = rs[len(rs)-1].Line
	}
}

func TestBatchAddIsIdempotentAndRefusesAChangedInput(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b, _ := newBatch(t, srv, "b")
	ctx := context.Background()
	require.NoError(t, b.Add(ctx, lines(1, 10), false))
	require.NoError(t, b.Add(ctx, lines(1, 10), false), "adding the same lines again")
	require.NoError(t, b.Add(ctx, lines(5, 12), false), "overlapping lines")
	require.NoError(t, b.Seal(ctx, 12))
	require.NoError(t, b.Seal(ctx, 12), "sealing again")
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 12, st.Total)
	assert.True(t, st.Sealed)

	changed := lines(1, 3)
	changed[2].Hash = "other"
	var ce *fleet.ChangedError
	require.ErrorAs(t, b.Add(ctx, changed, false), &ce)
	assert.Equal(t, 3, ce.Line)
	require.ErrorAs(t, b.Add(ctx, lines(13, 13), false), &ce, "a sealed batch takes no new line")
	assert.Equal(t, 13, ce.Line)
	require.ErrorAs(t, b.Seal(ctx, 11), &ce)
	st, err = b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 12, st.Total, "nothing was added by the refused calls")

	_, err = fleet.OpenBatch(nil, "bad name")
	assert.ErrorContains(t, err, "batch name has ' ' at byte 3")
	assert.NotContains(t, err.Error(), "fleet name", "a batch's name is not a fleet's")
}

func TestBatchWorkersShareTheLinesAndResultsComeInOrder(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b, _ := newBatch(t, srv, "b")
	ctx := context.Background()
	var h echo
	var wg sync.WaitGroup
	stats := make([]fleet.WorkStats, 3)
	for i := range stats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			stats[i], err = b.Work(ctx, fleet.WorkerOptions{Name: fmt.Sprint("w", i), Concurrency: 4, Lease: time.Second, WaitForBatch: true}, h.handle)
			assert.NoError(t, err)
		}()
	}
	// Workers told to wait for the batch wait for lines that are not
	// there yet.
	require.NoError(t, b.Add(ctx, lines(1, 300), false))
	require.NoError(t, b.Seal(ctx, 300))
	wg.Wait()

	rs := allResults(t, b)
	require.Len(t, rs, 300)
	for i, r := range rs {
		assert.Equal(t, i+1, r.Line)
		assert.Equal(t, "/items/"+strconv.Itoa(i+1), string(r.Data))
	}
	for n, c := range h.calls {
		assert.Equal(t, 1, c, "line %d handled once", n)
	}
	var stored int64
	for _, s := range stats {
		stored += s.Stored
	}
	assert.EqualValues(t, 300, stored)
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.True(t, st.Finished())
	assert.EqualValues(t, 300, st.Done)
	assert.Zero(t, st.InFlight)
	assert.Empty(t, st.Workers, "workers leave the live set when they finish")
}

func TestBatchTakesOverLinesOfAWorkerThatDied(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b, rdb := newBatch(t, srv, "b")
	ctx := context.Background()
	require.NoError(t, b.Add(ctx, lines(1, 20), false))
	require.NoError(t, b.Seal(ctx, 20))
	// A worker reads five lines and dies without a result.
	streams, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: "workers", Consumer: "dead", Streams: []string{"courier:{b}:batch:lines", ">"}, Count: 5,
	}).Result()
	require.NoError(t, err)
	require.Len(t, streams[0].Messages, 5)

	var h echo
	st, err := b.Work(ctx, fleet.WorkerOptions{Concurrency: 4, Lease: 150 * time.Millisecond}, h.handle)
	require.NoError(t, err)
	assert.EqualValues(t, 5, st.TakenOver)
	assert.EqualValues(t, 15, st.Taken)
	assert.Len(t, allResults(t, b), 20)
}

func TestBatchFirstResultWins(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b, rdb := newBatch(t, srv, "b")
	ctx := context.Background()
	require.NoError(t, b.Add(ctx, lines(1, 4), false))
	require.NoError(t, b.Seal(ctx, 4))

	// Worker A stalls on line 1 and loses it (as when its lease runs out
	// while it is paused); worker B takes line 1 over and stores first.
	started := make(chan struct{})
	stalled := func(ctx context.Context, l fleet.Line) fleet.Outcome {
		if l.N == 1 {
			close(started)
			for {
				rs, err := b.Results(ctx, 0, 1)
				if err == nil && rs[0].Data != nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
			return fleet.Outcome{Data: []byte("late")}
		}
		return fleet.Outcome{Data: []byte("a")}
	}
	var wg sync.WaitGroup
	var a fleet.WorkStats
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		a, err = b.Work(ctx, fleet.WorkerOptions{Name: "a", Concurrency: 1, Lease: time.Minute}, stalled)
		assert.NoError(t, err)
	}()
	<-started
	require.NoError(t, rdb.Do(ctx, "XCLAIM", "courier:{b}:batch:lines", "workers", "gone", 0, "1-0", "IDLE", 60000, "JUSTID").Err())
	bs, err := b.Work(ctx, fleet.WorkerOptions{Name: "b", Concurrency: 2, Lease: time.Second},
		func(_ context.Context, l fleet.Line) fleet.Outcome { return fleet.Outcome{Data: []byte("b")} })
	require.NoError(t, err)
	wg.Wait()

	rs := allResults(t, b)
	require.Len(t, rs, 4)
	assert.Equal(t, "b", string(rs[0].Data), "the first result stored wins")
	assert.EqualValues(t, 1, a.Late, "A's result came second and was dropped")
	assert.EqualValues(t, 1, bs.TakenOver)
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 4, st.Done, "a line handled twice is counted once")
	assert.Zero(t, st.InFlight)
}

func TestBatchSurvivesARedisRestart(t *testing.T) {
	for _, kill := range []bool{false, true} {
		t.Run(map[bool]string{false: "stop", true: "kill -9"}[kill], func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{AppendOnly: true})
			b, _ := newBatch(t, srv, "b")
			ctx := context.Background()
			require.NoError(t, b.Add(ctx, lines(1, 400), false))
			require.NoError(t, b.Seal(ctx, 400))
			var handled atomic.Int32
			restarted := make(chan struct{})
			h := func(_ context.Context, l fleet.Line) fleet.Outcome {
				if handled.Add(1) == 150 {
					if kill {
						srv.Kill()
					} else {
						srv.Stop()
					}
					srv.Restart()
					close(restarted)
				}
				return fleet.Outcome{Data: []byte(l.Text), Failed: l.N%100 == 0}
			}
			_, err := b.Work(ctx, fleet.WorkerOptions{Concurrency: 8, Lease: 300 * time.Millisecond}, h)
			require.NoError(t, err)
			<-restarted
			rs := allResults(t, b)
			require.Len(t, rs, 400, "nothing lost")
			for i, r := range rs {
				assert.Equal(t, i+1, r.Line)
			}
			st, err := b.Status(ctx)
			require.NoError(t, err)
			assert.EqualValues(t, 400, st.Done)
			assert.EqualValues(t, 4, st.Failed)
		})
	}
}

func TestBatchRemove(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b, rdb := newBatch(t, srv, "b")
	ctx := context.Background()
	require.NoError(t, b.Add(ctx, lines(1, 3), false))
	require.NoError(t, b.Remove(ctx))
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.False(t, st.Exists)
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys)
	assert.False(t, errors.Is(err, redis.Nil))
}

// Bad input to Add and Work is an error naming what was wrong: a line
// numbered 0 used to fail as a changed input ("another number of lines"),
// and a nil Handler panicked inside a worker goroutine.
func TestBatchRefusesLinesNumberedBelowOneAndANilHandler(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b, _ := newBatch(t, srv, "b")
	ctx := context.Background()
	bad := lines(1, 3)
	bad[1].N = 0
	err := b.Add(ctx, bad, false)
	require.Error(t, err)
	assert.ErrorContains(t, err, "lines[1] has number 0")
	var ce *fleet.ChangedError
	assert.False(t, errors.As(err, &ce), "not a changed input")
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.Zero(t, st.Total, "nothing was added")

	_, err = b.Work(ctx, fleet.WorkerOptions{}, nil)
	assert.ErrorContains(t, err, "nil")
}
