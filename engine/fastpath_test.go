package engine_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// The interleavings of the admission gate (gate.go) with the dispatcher's
// decisions. Like every test of the package they run on both paths (see
// TestMain); they were written for the fast path's races.

// heldTransport answers every request once release is closed, or fails it
// when its context ends first; it counts the attempts running at once.
type heldTransport struct {
	release chan struct{}
	mu      sync.Mutex
	running int
	most    int
	sent    atomic.Int64
	// canceled counts attempts whose context ended while they waited.
	canceled atomic.Int64
}

func newHeldTransport() *heldTransport { return &heldTransport{release: make(chan struct{})} }

func (h *heldTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h.sent.Add(1)
	h.mu.Lock()
	h.running++
	h.most = max(h.most, h.running)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.running--
		h.mu.Unlock()
	}()
	select {
	case <-h.release:
		return answer(r, 200, `{"ok":true}`), nil
	case <-r.Context().Done():
		h.canceled.Add(1)
		return nil, r.Context().Err()
	}
}

func (h *heldTransport) client() *http.Client { return &http.Client{Transport: h} }

// doAll runs each request with Do on a goroutine of its own and returns
// the errors, once every call has returned.
func doAll(ctx context.Context, e *engine.Engine, reqs ...*requests.Request) func() []error {
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { _, errs[i] = e.Do(ctx, r) })
	}
	return func() []error {
		wg.Wait()
		return errs
	}
}

func posts(n int) []*requests.Request {
	rs := make([]*requests.Request, n)
	for i := range rs {
		rs[i] = requests.New("POST", "/p/"+itoa(i))
	}
	return rs
}

// TestWorkersBoundCallersRunningTheirOwnAttempts: callers of Do that run
// their own attempts hold a worker's place each, so no more than Workers
// attempts run at once, and the callers beyond it wait their turn.
func TestWorkersBoundCallersRunningTheirOwnAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHeldTransport()
		e := virtualEngine(t, engine.Config{Workers: 2, HTTPClient: h.client()})
		wait := doAll(context.Background(), e, posts(8)...)
		synctest.Wait()
		assert.Equal(t, int64(2), h.sent.Load(), "attempts started while 8 callers wait")
		close(h.release)
		for i, err := range wait() {
			assert.NoError(t, err, "request %d", i)
		}
		assert.Equal(t, 2, h.most, "attempts running at once")
		assert.Equal(t, int64(8), e.Stats().Completed)
	})
}

// TestCloseFailsCallersRunningTheirOwnAttempts: Close reaches the attempts
// that callers run on their own goroutines: each is cancelled and its
// caller gets ErrClosed, and Close does not wait for the transport.
func TestCloseFailsCallersRunningTheirOwnAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHeldTransport()
		e := virtualEngine(t, engine.Config{Workers: 4, HTTPClient: h.client()})
		wait := doAll(context.Background(), e, posts(3)...)
		synctest.Wait()
		require.Equal(t, int64(3), h.sent.Load())
		require.NoError(t, e.Close())
		for i, err := range wait() {
			assert.ErrorIs(t, err, errors.ErrClosed, "request %d", i)
		}
		assert.Equal(t, int64(3), h.canceled.Load(), "attempts cancelled by Close")
		_, err := e.Do(context.Background(), requests.New("POST", "/after"))
		assert.ErrorIs(t, err, errors.ErrClosed)
		assert.Equal(t, int64(3), h.sent.Load(), "an attempt went out after Close")
	})
}

// TestGateClosingWhileCallersEnter: callers entering while Close closes
// the gate either run to their end or fail with ErrClosed; none is left
// waiting, and nothing is sent once Close has returned.
func TestGateClosingWhileCallersEnter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var closed atomic.Bool
		var late atomic.Int64
		e := virtualEngine(t, engine.Config{Workers: 2, HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
			if closed.Load() && r.Context().Err() == nil {
				late.Add(1)
			}
			return answer(r, 200, "ok"), nil
		})})
		var wg sync.WaitGroup
		results := make([]error, 16)
		for i := range results {
			wg.Go(func() { _, results[i] = e.Do(context.Background(), requests.New("POST", "/p")) })
			if i == 8 {
				wg.Go(func() {
					e.Close()
					closed.Store(true)
				})
			}
		}
		wg.Wait()
		for i, err := range results {
			if err != nil {
				assert.ErrorIs(t, err, errors.ErrClosed, "request %d", i)
			}
		}
		assert.Zero(t, late.Load(), "requests sent after Close returned")
		st := e.Stats()
		assert.Equal(t, st.Submitted, st.Completed+st.Failed, "every request resolved once: %+v", st)
	})
}

// TestTerminateSessionReachesCallersAttempts: TerminateSession cancels the
// attempts in flight, those that callers run themselves included, and
// fails them with ErrSessionExpired; requests after it fail fast.
func TestTerminateSessionReachesCallersAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHeldTransport()
		var expired atomic.Int64
		e := virtualEngine(t, engine.Config{
			Workers: 4, HTTPClient: h.client(),
			Auth: engine.Auth{AccessToken: "t0", OnSessionExpired: func() { expired.Add(1) }},
		})
		wait := doAll(context.Background(), e, posts(3)...)
		f := e.Submit(context.Background(), requests.New("GET", "/g"))
		synctest.Wait()
		require.Equal(t, int64(4), h.sent.Load())
		e.TerminateSession()
		for i, err := range wait() {
			assert.ErrorIs(t, err, errors.ErrSessionExpired, "request %d", i)
		}
		_, err := f.Await(context.Background())
		assert.ErrorIs(t, err, errors.ErrSessionExpired)
		synctest.Wait()
		assert.Equal(t, int64(4), h.canceled.Load(), "attempts cancelled")
		_, err = e.Do(context.Background(), requests.New("POST", "/after"))
		assert.ErrorIs(t, err, errors.ErrSessionExpired)
		assert.Equal(t, int64(4), h.sent.Load(), "an attempt went out after the session ended")
		assert.Equal(t, int64(1), expired.Load(), "OnSessionExpired calls")
	})
}

// TestUnauthorizedCallerClosesTheGate: once a caller's own attempt is
// answered 401, the requests that come after wait for the refresh instead
// of collecting 401s of their own, and everyone gets an answer with the
// new token after one refresh.
func TestUnauthorizedCallerClosesTheGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rejected atomic.Int64
		srv := newVirtualAuthServer(nil)
		srv.refreshGate = make(chan struct{})
		cfg := srv.virtualConfig()
		cfg.Workers = 4
		inner := cfg.HTTPClient.Transport
		cfg.HTTPClient = inProcess(func(r *http.Request) (*http.Response, error) {
			resp, err := inner.RoundTrip(r)
			if err == nil && resp.StatusCode == http.StatusUnauthorized {
				rejected.Add(1)
			}
			return resp, err
		})
		e := virtualEngine(t, cfg)
		first := doAll(context.Background(), e, requests.New("POST", "/first"))
		synctest.Wait() // 401, parked: the refresh waits on the server
		require.Equal(t, int64(1), rejected.Load())
		rest := doAll(context.Background(), e, posts(3)...)
		synctest.Wait()
		assert.Equal(t, int64(1), rejected.Load(), "requests after a 401 were sent with the rejected token")
		close(srv.refreshGate)
		for i, err := range append(first(), rest()...) {
			assert.NoError(t, err, "request %d", i)
		}
		assert.Equal(t, int64(1), srv.refreshCalls.Load(), "refresh calls")
	})
}

// TestFollowerJoinsACallersCall: a GET identical to one in flight joins it,
// whichever path the leader took; the upstream call is made once, each
// gets its own Response, and the leader leaving does not cancel the call
// while the follower waits.
func TestFollowerJoinsACallersCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHeldTransport()
		e := virtualEngine(t, engine.Config{Workers: 2, HTTPClient: h.client()})
		ctx, leave := context.WithCancel(context.Background())
		lead := e.Submit(ctx, requests.New("GET", "/same"))
		synctest.Wait()
		follower := e.Submit(context.Background(), requests.New("GET", "/same"))
		synctest.Wait()
		assert.Equal(t, int64(1), e.Stats().DedupHits)
		leave()
		_, err := lead.Await(context.Background())
		assert.ErrorIs(t, err, context.Canceled)
		synctest.Wait()
		assert.Zero(t, h.canceled.Load(), "the call was cancelled while a follower waited")
		close(h.release)
		resp, err := follower.Await(context.Background())
		require.NoError(t, err)
		assert.Equal(t, 200, resp.Status)
		assert.Same(t, follower.Request(), resp.Request)
		assert.Equal(t, int64(1), h.sent.Load(), "upstream calls")
	})
}

// TestLastWaiterLeavingCancelsTheCall: when every waiter of a shared call
// has left, its attempt is cancelled.
func TestLastWaiterLeavingCancelsTheCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHeldTransport()
		e := virtualEngine(t, engine.Config{Workers: 2, HTTPClient: h.client()})
		ctx1, leave1 := context.WithCancel(context.Background())
		ctx2, leave2 := context.WithCancel(context.Background())
		a := e.Submit(ctx1, requests.New("GET", "/same"))
		synctest.Wait()
		b := e.Submit(ctx2, requests.New("GET", "/same"))
		synctest.Wait()
		leave2()
		synctest.Wait()
		assert.Zero(t, h.canceled.Load(), "cancelled with a waiter left")
		leave1()
		synctest.Wait()
		assert.Equal(t, int64(1), h.canceled.Load(), "the attempt goes on with nobody waiting")
		for _, f := range []*engine.Future{a, b} {
			_, err := f.Await(context.Background())
			assert.ErrorIs(t, err, context.Canceled)
		}
	})
}

// TestFullQueueBehindCallersAttempts: with every place taken by callers'
// own attempts, a Submit waits in the queue, a TrySubmit finds it full,
// and both paths drain in order once the attempts end.
func TestFullQueueBehindCallersAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHeldTransport()
		e := virtualEngine(t, engine.Config{Workers: 1, QueueSize: 1, HTTPClient: h.client()})
		first := doAll(context.Background(), e, requests.New("POST", "/first"))
		synctest.Wait()
		queued := e.Submit(context.Background(), requests.New("POST", "/queued"))
		synctest.Wait()
		_, err := e.TrySubmit(context.Background(), requests.New("POST", "/refused"))
		assert.ErrorIs(t, err, errors.ErrQueueFull)
		assert.Equal(t, int64(1), h.sent.Load(), "attempts while one place is taken")
		close(h.release)
		assert.NoError(t, first()[0])
		_, err = queued.Await(context.Background())
		assert.NoError(t, err)
		// The queue drained: the next request finds room at once.
		f, err := e.TrySubmit(context.Background(), requests.New("POST", "/later"))
		require.NoError(t, err)
		_, err = f.Await(context.Background())
		assert.NoError(t, err)
	})
}

// TestFollowerJoinsADoThatCannotLeave: a Do whose context cannot end runs
// its shared call itself; a GET identical to it joins it and gets the
// same answer from the one upstream call.
func TestFollowerJoinsADoThatCannotLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHeldTransport()
		e := virtualEngine(t, engine.Config{Workers: 2, HTTPClient: h.client()})
		lead := doAll(context.Background(), e, requests.New("GET", "/same"))
		synctest.Wait()
		follower := e.Submit(context.Background(), requests.New("GET", "/same"))
		other := e.Submit(context.Background(), requests.New("GET", "/other"))
		synctest.Wait()
		assert.Equal(t, int64(1), e.Stats().DedupHits)
		assert.Equal(t, int64(2), h.sent.Load(), "upstream calls: /same once, /other once")
		close(h.release)
		assert.NoError(t, lead()[0])
		for _, f := range []*engine.Future{follower, other} {
			resp, err := f.Await(context.Background())
			require.NoError(t, err)
			assert.Same(t, f.Request(), resp.Request)
		}
	})
}
