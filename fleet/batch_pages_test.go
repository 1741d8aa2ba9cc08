package fleet_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
)

// pagedLines is a PageHandler for lines whose line N has N+1 pages: it
// carries on after the pages stored, stores each page but the last with
// the next page's number as its state, and counts the pages it "fetches".
type pagedLines struct {
	mu      sync.Mutex
	fetched map[string]int // "N.K" to times fetched
	resumed map[int]int    // line to the pages it found stored
}

func (h *pagedLines) handle(ctx context.Context, l fleet.Line, p *fleet.Pager) fleet.Outcome {
	stored, state, err := p.Resume(ctx)
	if err != nil {
		return fleet.Outcome{Skip: true}
	}
	k := 1
	if stored > 0 {
		k, _ = strconv.Atoi(string(state))
	}
	h.mu.Lock()
	if h.fetched == nil {
		h.fetched, h.resumed = map[string]int{}, map[int]int{}
	}
	h.resumed[l.N] = stored
	h.mu.Unlock()
	for ; ; k++ {
		h.mu.Lock()
		h.fetched[fmt.Sprintf("%d.%d", l.N, k)]++
		h.mu.Unlock()
		data := []byte(fmt.Sprintf("line %d page %d", l.N, k))
		if k == l.N+1 {
			return fleet.Outcome{Data: data}
		}
		if err := p.Store(ctx, data, []byte(strconv.Itoa(k+1))); err != nil {
			return fleet.Outcome{Skip: true}
		}
	}
}

// pagesOf is a result's pages, in order.
func pagesOf(r fleet.Result) []string {
	var out []string
	for _, p := range r.Pages {
		out = append(out, string(p))
	}
	if len(r.Data) > 0 {
		out = append(out, string(r.Data))
	}
	return out
}

func TestBatchPagesOfALineAreStoredAndReadInOrder(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b, rdb := newBatch(t, srv, "b")
	ctx := context.Background()
	require.NoError(t, b.Add(ctx, lines(1, 5), false))
	require.NoError(t, b.Seal(ctx, 5))
	var h pagedLines
	ws, err := b.WorkPages(ctx, fleet.WorkerOptions{Concurrency: 3, Lease: time.Second}, h.handle)
	require.NoError(t, err)
	assert.EqualValues(t, 5, ws.Stored, "one result per line, however many pages")

	rs := allResults(t, b)
	require.Len(t, rs, 5)
	for i, r := range rs {
		var want []string
		for k := 1; k <= r.Line+1; k++ {
			want = append(want, fmt.Sprintf("line %d page %d", r.Line, k))
		}
		assert.Equal(t, want, pagesOf(r), "line %d", i+1)
	}
	for page, n := range h.fetched {
		assert.Equal(t, 1, n, "page %s fetched once", page)
	}
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 5, st.Done, "a line of 6 pages is one line done")
	assert.Zero(t, st.InFlight)
	assert.True(t, st.Finished())

	// The pages are kept in the batch's results, with its TTL.
	ttl, err := rdb.PTTL(ctx, "courier:{b}:batch:results").Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Duration(0))
	require.NoError(t, b.Remove(ctx))
	n, err := rdb.Exists(ctx, "courier:{b}:batch:results").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "Remove takes the pages with the results")
}

func TestBatchPagesAWorkerThatLosesItsLineMidwayStoresNoMore(t *testing.T) {
	// Worker A stores three pages of line 4 (five pages in all) and
	// stalls; its lease lapses and worker B takes the line over: B
	// carries on from page 4, and A, waking, may store nothing more.
	srv := redistest.Start(t, redistest.Options{})
	b, rdb := newBatch(t, srv, "b")
	ctx := context.Background()
	require.NoError(t, b.Add(ctx, []fleet.Line{{N: 4, Text: "/c", Hash: "h"}}, false))
	require.NoError(t, b.Seal(ctx, 1))

	var h pagedLines
	stalled, wake := make(chan struct{}), make(chan struct{})
	var aErr error
	stalling := func(ctx context.Context, l fleet.Line, p *fleet.Pager) fleet.Outcome {
		for k := 1; k <= 3; k++ {
			h.mu.Lock()
			if h.fetched == nil {
				h.fetched, h.resumed = map[string]int{}, map[int]int{}
			}
			h.fetched[fmt.Sprintf("%d.%d", l.N, k)]++
			h.mu.Unlock()
			assert.NoError(t, p.Store(ctx, []byte(fmt.Sprintf("line %d page %d", l.N, k)), []byte(strconv.Itoa(k+1))))
		}
		close(stalled)
		<-wake
		aErr = p.Store(ctx, []byte("late page"), []byte("5"))
		return fleet.Outcome{Data: []byte("late result")}
	}
	var wg sync.WaitGroup
	var a fleet.WorkStats
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		a, err = b.WorkPages(ctx, fleet.WorkerOptions{Name: "a", Concurrency: 1, Lease: time.Minute}, stalling)
		assert.NoError(t, err)
	}()
	<-stalled
	// A's lease lapses: the line is idle, held by nobody alive.
	require.NoError(t, rdb.Do(ctx, "XCLAIM", "courier:{b}:batch:lines", "workers", "gone", 0, "4-0", "IDLE", 60000, "JUSTID").Err())
	bs, err := b.WorkPages(ctx, fleet.WorkerOptions{Name: "b", Concurrency: 1, Lease: time.Second}, h.handle)
	require.NoError(t, err)
	close(wake)
	wg.Wait()

	assert.True(t, errors.Is(aErr, fleet.ErrLeaseLost), "A stores no page once B has the line: %v", aErr)
	assert.EqualValues(t, 1, a.Late)
	assert.EqualValues(t, 1, bs.TakenOver)
	assert.Equal(t, 3, h.resumed[4], "B found A's three pages")
	for page, n := range h.fetched {
		assert.Equal(t, 1, n, "page %s fetched once", page)
	}
	rs := allResults(t, b)
	require.Len(t, rs, 1)
	assert.Equal(t, []string{"line 4 page 1", "line 4 page 2", "line 4 page 3", "line 4 page 4", "line 4 page 5"}, pagesOf(rs[0]))
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.Done)
	assert.Zero(t, st.InFlight)
}
