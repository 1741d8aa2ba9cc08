package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// gatedAPI is an in-process API at http://api.test that holds every
// request until release is closed (or sent a value), counting calls and
// noticing when a held request is cancelled by the client. It is made
// inside a synctest bubble, whose Wait lets every held call arrive.
type gatedAPI struct {
	URL       string
	calls     atomic.Int64
	cancelled chan struct{}
	release   chan struct{}
}

func newGatedAPI() *gatedAPI {
	return &gatedAPI{URL: "http://api.test", cancelled: make(chan struct{}, 1), release: make(chan struct{})}
}

// config is an engine config whose every attempt reaches g.
func (g *gatedAPI) config() engine.Config {
	return engine.Config{BaseURL: g.URL, HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
		g.calls.Add(1)
		select {
		case <-g.release:
			return answer(r, 200, `{"n":42}`), nil
		case <-r.Context().Done():
			g.cancelled <- struct{}{}
			return nil, r.Context().Err()
		}
	})}
}

func TestDedupMergesIdenticalGETs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedAPI()
		e := virtualEngine(t, g.config())
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
		synctest.Wait()
		require.EqualValues(t, n-1, e.Stats().DedupHits, "all merged")
		require.EqualValues(t, 1, g.calls.Load(), "the upstream call")

		cancels[0]() // the first submitter leaves
		cancels[7]() // and a follower
		_, err := futures[0].Await(context.Background())
		assert.ErrorIs(t, err, context.Canceled)
		_, err = futures[7].Await(context.Background())
		assert.ErrorIs(t, err, context.Canceled)
		synctest.Wait()
		select {
		case <-g.cancelled:
			t.Fatal("the upstream call was cancelled while waiters remained")
		default:
		}

		close(g.release)
		for i, f := range futures {
			if i == 0 || i == 7 {
				continue
			}
			resp, err := f.Await(context.Background())
			require.NoError(t, err, "future %d", i)
			v, err := requests.Decode[map[string]int](resp)
			require.NoError(t, err)
			assert.Equal(t, 42, v["n"])
		}
		assert.EqualValues(t, 1, g.calls.Load(), "one upstream call for all")
	})
}

// TestDedupEveryWaiterOwnsItsResponse: the first submitter and its
// followers each get a Response value of their own, naming their own
// request, so what one waiter does to its Response's fields the moment it
// has it never shows in another's (nor races with the engine copying it
// for them). The copies are of the fields: the Header map and the Body
// bytes are shared, to be read, not changed.
func TestDedupEveryWaiterOwnsItsResponse(t *testing.T) {
	for _, followers := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d followers", followers), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newGatedAPI()
				e := virtualEngine(t, g.config())
				firstReq := requests.New("GET", "/items/1")
				first := e.Submit(context.Background(), firstReq)
				synctest.Wait()
				reqs := make([]*requests.Request, followers)
				futures := make([]*engine.Future, followers)
				for i := range futures {
					reqs[i] = requests.New("GET", "/items/1")
					futures[i] = e.Submit(context.Background(), reqs[i])
				}
				synctest.Wait()
				require.EqualValues(t, followers, e.Stats().DedupHits)

				close(g.release)
				resp, err := first.Await(context.Background())
				require.NoError(t, err)
				assert.Same(t, firstReq, resp.Request)
				// The first waiter makes the answer its own at once.
				resp.Status, resp.Attempts, resp.Request = 0, 99, nil
				for i, f := range futures {
					got, err := f.Await(context.Background())
					require.NoError(t, err, "follower %d", i)
					assert.NotSame(t, resp, got, "follower %d", i)
					assert.Equal(t, 200, got.Status, "follower %d", i)
					assert.Equal(t, 1, got.Attempts, "follower %d", i)
					assert.Same(t, reqs[i], got.Request, "follower %d names its own request", i)
					got.Status = 0
				}
				for i, f := range futures {
					got, _ := f.Await(context.Background())
					for j, g := range futures[:i] {
						other, _ := g.Await(context.Background())
						assert.NotSame(t, other, got, "followers %d and %d", j, i)
					}
				}
			})
		})
	}
}

func TestDedupCancelsUpstreamWhenEveryWaiterLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedAPI()
		defer close(g.release)
		e := virtualEngine(t, g.config())
		ctx, cancel := context.WithCancel(context.Background())
		futures := make([]*engine.Future, 50)
		for i := range futures {
			futures[i] = e.Submit(ctx, requests.New("GET", "/slow"))
		}
		synctest.Wait()
		require.EqualValues(t, 1, g.calls.Load(), "the upstream call")
		cancel()
		synctest.Wait()
		select {
		case <-g.cancelled:
		default:
			t.Fatal("the upstream call was not cancelled when every waiter left")
		}
		for _, f := range futures {
			_, err := f.Await(context.Background())
			assert.ErrorIs(t, err, context.Canceled)
		}
	})
}

func TestDedupOnlyForSafeMethodsOrExplicitKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedAPI()
		e := virtualEngine(t, g.config())
		ctx := context.Background()
		var fs []*engine.Future
		fs = append(fs, e.Submit(ctx, requests.New("POST", "/p")), e.Submit(ctx, requests.New("POST", "/p")))
		fs = append(fs, e.Submit(ctx, requests.New("POST", "/k", requests.WithDedupKey("same"))),
			e.Submit(ctx, requests.New("POST", "/k", requests.WithDedupKey("same"))))
		fs = append(fs, e.Submit(ctx, requests.New("GET", "/g", requests.WithHeader("Accept", "text/csv"))),
			e.Submit(ctx, requests.New("GET", "/g", requests.WithHeader("Accept", "application/json"))))
		fs = append(fs, e.Submit(ctx, requests.New("GET", "/n", requests.WithoutDedup())),
			e.Submit(ctx, requests.New("GET", "/n", requests.WithoutDedup())))
		// POSTs: 2 calls; keyed: 1; different Accept: 2; no-dedup: 2.
		synctest.Wait()
		require.EqualValues(t, 7, g.calls.Load(), "seven upstream calls, all held at once")
		close(g.release)
		for _, f := range fs {
			_, err := f.Await(ctx)
			require.NoError(t, err)
		}
		assert.EqualValues(t, 7, g.calls.Load())
		assert.EqualValues(t, 1, e.Stats().DedupHits)
	})
}

// TestDedupLoneFollowerGetsItsOwnRequest pins a bug: when the first
// submitter left and one follower remained, the follower's response named
// the first submitter's request.
func TestDedupLoneFollowerGetsItsOwnRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedAPI()
		e := virtualEngine(t, g.config())
		firstCtx, leave := context.WithCancel(context.Background())
		defer leave()
		first := e.Submit(firstCtx, requests.New("GET", "/items/1"))
		synctest.Wait()
		require.EqualValues(t, 1, g.calls.Load(), "the upstream call")
		followerReq := requests.New("GET", "/items/1")
		follower := e.Submit(context.Background(), followerReq)
		synctest.Wait()
		require.EqualValues(t, 1, e.Stats().DedupHits, "the follower merged")
		leave()
		_, err := first.Await(context.Background())
		require.ErrorIs(t, err, context.Canceled)

		close(g.release)
		resp, err := follower.Await(context.Background())
		require.NoError(t, err)
		assert.Same(t, followerReq, resp.Request, "the response names the follower's own request")
	})
}
