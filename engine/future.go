package engine

import (
	"context"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"

	"github.com/courier-go/courier/requests"
)

// Future is the pending result of a submitted request. It resolves exactly
// once, with a response, an error, or both (a non-2xx answer gives its
// [requests.Response] and an *errors.HTTPError). Futures come from
// [Engine.Submit]; the zero value is not usable. Future is safe for
// concurrent use; any number of goroutines may await it.
type Future struct {
	// Set by Submit before the dispatcher sees the future; read-only after.
	req  *requests.Request
	ctx  context.Context // the submitter's; its end makes this waiter leave
	span trace.Span      // the request's span; nil unless the engine traces

	// Written once, by whoever wins resolved: resolve.go's table says who
	// may, and when. resp and err are read only after waiting on wg or
	// done.
	resolved atomic.Bool
	resp     *requests.Response
	err      error
	live     *liveResponse  // a streamed answer, for RoundTrip
	wg       sync.WaitGroup // one count, released by publish: Await waits on it
	mu       sync.Mutex     // protects done and published
	// done is made on first need (Done, or Await with a context that can
	// end): most futures are awaited without one.
	done      chan struct{}
	published bool

	// Owned by the dispatcher goroutine, except that settle calls
	// stopWatch, which is safe from any goroutine, once it was set.
	stopWatch func() bool // stops the ctx watcher
	call      *call       // the call f waits on: own, or the one it joined

	// own is the call this future starts when it is not merged into one in
	// flight, filled in by Submit (see prepare) and admitted by the
	// dispatcher: one allocation for both.
	own call
}

func newFuture(ctx context.Context, req *requests.Request) *Future {
	f := &Future{}
	f.init(ctx, req)
	return f
}

// init sets up a zero Future for req, submitted with ctx.
func (f *Future) init(ctx context.Context, req *requests.Request) {
	f.req, f.ctx = req, ctx
	f.wg.Add(1)
}

// Done returns a channel that is closed when the future resolves.
func (f *Future) Done() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done == nil {
		f.done = make(chan struct{})
		if f.published {
			close(f.done)
		}
	}
	return f.done
}

// Request returns the request this future answers.
func (f *Future) Request() *requests.Request { return f.req }

// Await waits for the result. If ctx ends first it returns ctx's error and
// the future goes on; the request is cancelled only by the context it was
// submitted with. A nil ctx is a mistake: Await then returns the result if
// the future has resolved, and an error otherwise.
func (f *Future) Await(ctx context.Context) (*requests.Response, error) {
	if ctx == nil {
		// A caller's mistake: the result if there is one, else an error
		// rather than a panic or a wait without end.
		f.mu.Lock()
		published := f.published
		f.mu.Unlock()
		if published {
			return f.resp, f.err
		}
		return nil, errNilContext
	}
	if ctx.Done() == nil {
		f.wg.Wait()
		return f.resp, f.err
	}
	done := f.Done()
	select {
	case <-done:
		return f.resp, f.err
	default:
	}
	select {
	case <-done:
		return f.resp, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// wait waits for the result, whatever it takes.
func (f *Future) wait() (*requests.Response, error) {
	f.wg.Wait()
	return f.resp, f.err
}
