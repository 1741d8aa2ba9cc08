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
	// A Future is three things in one allocation, each with one owner:
	//   - the request as submitted (req, ctx, span): set by Submit before
	//     anyone else sees the future, read-only after;
	//   - its result: written once, by whoever resolve.go's table lets
	//     win it, read by the Future's methods after the publication;
	//   - the engine's record of it as one waiter on a call (w): the
	//     Future's methods never read it.
	req  *requests.Request
	ctx  context.Context // the submitter's; its end makes this waiter leave
	span trace.Span      // the request's span; nil unless the engine traces

	result
	w waiter
}

// result is a Future's outcome and its publication (resolve.go). resp,
// err and live are written once, by the goroutine that won resolved, and
// read only after waiting on wg or done.
type result struct {
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
}

// waiter is the engine's record of a Future as one waiter on a call: the
// call it waits on and the watch on its context. It belongs to the
// dispatcher goroutine, or, on the fast path, to the entrant holding the
// call's place (gate.go) and to the dedup shard's lock for a shared call
// (dedup.go); stop, once set, is safe to call from any goroutine.
type waiter struct {
	stop watchStop // stops the ctx watcher (watch)
	call *call     // the call the future waits on: own, or the one it joined

	// own is the call this future starts when it is not merged into one in
	// flight, filled in by Submit (see prepare) and admitted by the
	// dispatcher or the fast path: one allocation for both.
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
