package engine

import (
	"context"
	"net/url"
	"sync/atomic"

	"github.com/courier-go/courier/requests"
)

// Future is the pending result of a submitted request. It resolves exactly
// once, with a response, an error, or both (a non-2xx answer gives its
// [requests.Response] and an *errors.HTTPError). Futures come from
// [Engine.Submit]; the zero value is not usable. Future is safe for
// concurrent use; any number of goroutines may await it.
type Future struct {
	// Set by Submit before the dispatcher sees the future; read-only after.
	req        *requests.Request
	ctx        context.Context // the submitter's; its end makes this waiter leave
	url        *url.URL        // resolved request URL
	urlStr     string          // url as a string
	sameOrigin bool            // url has the base URL's origin: the token may go
	key        string          // dedup key
	stream     *streamed       // set by RoundTrip: the answer is handed over alive

	// done is closed, and resp and err written just before, by whoever
	// wins resolved (see claim): Submit, the dispatcher or a worker.
	// Readers read resp and err only after done is closed.
	done     chan struct{}
	resp     *requests.Response
	err      error
	live     *liveResponse // a streamed answer, for RoundTrip
	resolved atomic.Bool

	// Owned by the dispatcher goroutine, except that settle calls
	// stopWatch, which is safe from any goroutine, once it was set.
	stopWatch func() bool // stops the ctx watcher
	call      *call
}

func newFuture(ctx context.Context, req *requests.Request) *Future {
	return &Future{req: req, ctx: ctx, done: make(chan struct{})}
}

// claim reports whether this call may resolve f, which it then must do with
// publish; a second claim is a bug in the engine and is refused.
func (f *Future) claim() bool {
	if !f.resolved.CompareAndSwap(false, true) {
		doubleResolves.Add(1)
		return false
	}
	return true
}

// publish gives f its result and wakes its waiters.
func (f *Future) publish(resp *requests.Response, err error) {
	f.resp, f.err = resp, err
	close(f.done)
}

// doubleResolves counts refused second resolutions; tests assert it stays 0.
var doubleResolves atomic.Int64

// Done returns a channel that is closed when the future resolves.
func (f *Future) Done() <-chan struct{} { return f.done }

// Request returns the request this future answers.
func (f *Future) Request() *requests.Request { return f.req }

// Await waits for the result. If ctx ends first it returns ctx's error and
// the future goes on; the request is cancelled only by the context it was
// submitted with.
func (f *Future) Await(ctx context.Context) (*requests.Response, error) {
	if ctx.Done() == nil {
		<-f.done
		return f.resp, f.err
	}
	select {
	case <-f.done:
		return f.resp, f.err
	default:
	}
	select {
	case <-f.done:
		return f.resp, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
