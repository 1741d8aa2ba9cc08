package engine_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// gatedServer holds every request until release is closed, counting calls
// and noticing when a held request is cancelled by the client.
type gatedServer struct {
	*httptest.Server
	calls     atomic.Int64
	cancelled chan struct{}
	release   chan struct{}
}

func newGatedServer(t *testing.T) *gatedServer {
	g := &gatedServer{cancelled: make(chan struct{}, 1), release: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.calls.Add(1)
		select {
		case <-g.release:
			w.Write([]byte(`{"n":42}`))
		case <-r.Context().Done():
			g.cancelled <- struct{}{}
		}
	}))
	t.Cleanup(g.Close)
	return g
}

func TestDedupMergesIdenticalGETs(t *testing.T) {
	g := newGatedServer(t)
	e := newEngine(t, engine.Config{BaseURL: g.URL})
	const n = 500
	futures := make([]*engine.Future, n)
	cancels := make([]context.CancelFunc, n)
	for i := range futures {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		// The same query in another order is the same request.
		q := "/items?a=1&b=2"
		if i%2 == 1 {
			q = "/items?b=2&a=1"
		}
		futures[i] = e.Submit(ctx, requests.New("GET", q))
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	waitFor(t, "all merged", func() bool { return e.Stats().DedupHits == n-1 })
	waitFor(t, "the upstream call", func() bool { return g.calls.Load() == 1 })

	cancels[0]() // the first submitter leaves
	cancels[7]() // and a follower
	_, err := futures[0].Await(context.Background())
	assert.ErrorIs(t, err, context.Canceled)
	_, err = futures[7].Await(context.Background())
	assert.ErrorIs(t, err, context.Canceled)

	close(g.release)
	ctx := ctxTimeout(t, 5*time.Second)
	for i, f := range futures {
		if i == 0 || i == 7 {
			continue
		}
		resp, err := f.Await(ctx)
		require.NoError(t, err, "future %d", i)
		v, err := requests.Decode[map[string]int](resp)
		require.NoError(t, err)
		assert.Equal(t, 42, v["n"])
	}
	assert.EqualValues(t, 1, g.calls.Load(), "one upstream call for all")
	select {
	case <-g.cancelled:
		t.Fatal("the upstream call was cancelled while waiters remained")
	default:
	}
}

func TestDedupCancelsUpstreamWhenEveryWaiterLeaves(t *testing.T) {
	g := newGatedServer(t)
	defer close(g.release)
	e := newEngine(t, engine.Config{BaseURL: g.URL})
	ctx, cancel := context.WithCancel(context.Background())
	futures := make([]*engine.Future, 50)
	for i := range futures {
		futures[i] = e.Submit(ctx, requests.New("GET", "/slow"))
	}
	waitFor(t, "the upstream call", func() bool { return g.calls.Load() == 1 })
	cancel()
	select {
	case <-g.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream call was not cancelled when every waiter left")
	}
	for _, f := range futures {
		_, err := f.Await(context.Background())
		assert.ErrorIs(t, err, context.Canceled)
	}
}

func TestDedupOnlyForSafeMethodsOrExplicitKeys(t *testing.T) {
	g := newGatedServer(t)
	e := newEngine(t, engine.Config{BaseURL: g.URL})
	ctx := ctxTimeout(t, 5*time.Second)
	var fs []*engine.Future
	fs = append(fs, e.Submit(ctx, requests.New("POST", "/p")), e.Submit(ctx, requests.New("POST", "/p")))
	fs = append(fs, e.Submit(ctx, requests.New("POST", "/k", requests.WithDedupKey("same"))),
		e.Submit(ctx, requests.New("POST", "/k", requests.WithDedupKey("same"))))
	fs = append(fs, e.Submit(ctx, requests.New("GET", "/g", requests.WithHeader("Accept", "text/csv"))),
		e.Submit(ctx, requests.New("GET", "/g", requests.WithHeader("Accept", "application/json"))))
	fs = append(fs, e.Submit(ctx, requests.New("GET", "/n", requests.WithoutDedup())),
		e.Submit(ctx, requests.New("GET", "/n", requests.WithoutDedup())))
	// POSTs: 2 calls; keyed: 1; different Accept: 2; no-dedup: 2.
	waitFor(t, "seven upstream calls", func() bool { return g.calls.Load() == 7 })
	close(g.release)
	for _, f := range fs {
		_, err := f.Await(ctx)
		require.NoError(t, err)
	}
	assert.EqualValues(t, 7, g.calls.Load())
	assert.EqualValues(t, 1, e.Stats().DedupHits)
}

// TestDedupLoneFollowerGetsItsOwnRequest pins a bug: when the first
// submitter left and one follower remained, the follower's response named
// the first submitter's request.
func TestDedupLoneFollowerGetsItsOwnRequest(t *testing.T) {
	g := newGatedServer(t)
	e := newEngine(t, engine.Config{BaseURL: g.URL})
	firstCtx, leave := context.WithCancel(context.Background())
	defer leave()
	first := e.Submit(firstCtx, requests.New("GET", "/items/1"))
	waitFor(t, "the upstream call", func() bool { return g.calls.Load() == 1 })
	followerReq := requests.New("GET", "/items/1")
	follower := e.Submit(context.Background(), followerReq)
	waitFor(t, "the follower merged", func() bool { return e.Stats().DedupHits == 1 })
	leave()
	_, err := first.Await(context.Background())
	require.ErrorIs(t, err, context.Canceled)

	close(g.release)
	resp, err := follower.Await(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	assert.Same(t, followerReq, resp.Request, "the response names the follower's own request")
}
