package engine

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// Engine sends requests through a bounded queue and a pool of workers,
// attaching, refreshing and replaying tokens, retrying, pacing and merging
// identical requests. Create one with [New]; stop it with [Engine.Shutdown]
// or [Engine.Close].
//
// The zero value is not usable; New returns a running engine. Engine is
// safe for concurrent use by any number of goroutines.
type Engine struct {
	s         *settings
	client    *http.Client      // the caller's client, with the redirect guard
	transport http.RoundTripper // middleware chain around the client (sender)
	pacer     *pacer            // holds, buckets and back-off per host
	breakers  *breakers         // circuit breakers per host; nil: none
	hedger    *hedger           // hedged attempts; nil: none
	log       *zerolog.Logger
	tokens    atomic.Pointer[tokenSnap] // published by the token actor
	stats     counters

	d     *dispatcher
	actor *tokenActor
	hooks *hooks
	tel   *telemetry // nil: no OpenTelemetry

	wg           conc.WaitGroup // owns every goroutine the engine starts
	finished     chan struct{}  // closed when all of them have returned
	killed       chan struct{}  // closed by Close, before it tells the dispatcher
	shutdownOnce sync.Once
	closeOnce    sync.Once
}

// New validates cfg, naming every problem it finds, and starts the engine's
// dispatcher, token actor and workers.
func New(cfg Config) (*Engine, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	e := &Engine{s: s, log: s.Logger, finished: make(chan struct{}), killed: make(chan struct{})}
	e.client = guardedClient(s)
	var rt http.RoundTripper = newSender(e.client)
	for i := len(s.Middleware) - 1; i >= 0; i-- {
		rt = s.Middleware[i](rt)
	}
	e.transport = rt
	e.pacer = newPacer(s, &e.stats)
	e.hooks = newHooks(e.log, &e.stats.hookPanics)
	e.breakers = newBreakers(s, &e.stats, e.breakerChanged)
	e.hedger = newHedger(s.Hedge, s.Clock)
	if e.tel, err = newTelemetry(s, &e.stats); err != nil {
		return nil, fmt.Errorf("courier: telemetry: %w", err)
	}
	e.d = newDispatcher(e)
	if e.actor, err = newTokenActor(e); err != nil {
		return nil, err
	}

	e.wg.Go(func() {
		defer close(e.finished)
		var inner conc.WaitGroup
		for _, w := range e.d.slots {
			inner.Go(func() { e.worker(w) })
		}
		inner.Go(e.actor.run)
		inner.Go(e.hooks.run)
		// The dispatcher returns after Shutdown has drained or Close; it
		// closes the workers' slots, which stops them.
		e.d.run()
		close(e.actor.stop)
		close(e.hooks.stop)
		inner.Wait()
		e.tel.stop()
		if s.HTTPClient == nil {
			e.client.CloseIdleConnections() // the engine's own transport
		}
	})
	return e, nil
}

// sender is the bottom of the middleware chain: the engine's client, which
// follows redirects, guarded. A streamed attempt, whose redirects go back
// to its caller, goes to the client's transport directly when the client
// would add nothing else to it: no cookie jar, no timeout of its own, no
// credentials in the URL. It then skips the client's copies of the
// request and its headers.
type sender struct {
	client *http.Client
	direct http.RoundTripper // nil: always through the client
}

func newSender(c *http.Client) sender {
	s := sender{client: c}
	if c.Jar == nil && c.Timeout == 0 {
		s.direct = c.Transport
		if s.direct == nil {
			s.direct = http.DefaultTransport
		}
	}
	return s
}

func (s sender) RoundTrip(r *http.Request) (*http.Response, error) {
	if s.direct == nil || r.URL.User != nil || r.Context().Value(noFollow{}) == nil {
		return s.client.Do(r)
	}
	resp, err := s.direct.RoundTrip(r)
	switch {
	case err != nil:
		if resp != nil && resp.Body != nil {
			resp.Body.Close() // as http.Client does with a transport that returns both
		}
		return nil, err
	case resp == nil:
		return nil, fmt.Errorf("http: RoundTripper implementation (%T) returned a nil *Response with a nil error", s.direct)
	case resp.Body == nil:
		resp.Body = http.NoBody
	}
	return resp, nil
}

// guardedClient returns a copy of the configured client (or a tuned default)
// whose redirects never carry the token or other credentials to another
// origin (see guardRedirect).
func guardedClient(s *settings) *http.Client {
	var c http.Client
	if s.HTTPClient != nil {
		c = *s.HTTPClient
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = max(s.Workers, t.MaxIdleConnsPerHost)
		t.MaxIdleConns = max(2*s.Workers, t.MaxIdleConns)
		c.Transport = t
	}
	c.CheckRedirect = s.guardRedirect(c.CheckRedirect)
	return &c
}

// Submit queues req and returns its future. When the queue is full, Submit
// waits for room until ctx ends. ctx also bounds the request: when it ends
// the future fails with ctx's error, and the upstream call is cancelled
// once no other submitter shares it. A nil ctx fails the future at once
// (so do the other methods that take a ctx, rather than panic).
func (e *Engine) Submit(ctx context.Context, req *requests.Request) *Future {
	f, ok := e.prepare(ctx, req)
	if !ok || e.fromCache(f) {
		return f
	}
	if shared(&f.w.own) {
		if e.d.gate.word.Load() == gateOpen && e.submitShared(f, false) {
			return f
		}
	} else if e.fastEligible(f) {
		// The gate is open: straight into an idle worker's place.
		if s := e.d.gate.enter(f); s != nil {
			e.admitFast(f)
			e.watchAlone(f)
			e.stats.inFlight.Add(1)
			if !e.d.gate.send(s, f) {
				e.stats.inFlight.Add(-1)
				e.settle(f, nil, errors.ErrClosed)
			}
			return f
		}
	}
	e.d.submit(ctx, f)
	return f
}

// fastEligible reports whether f, not shared (see submitShared), may take
// the fast path (gate.go) on its own: the gate is open, and no call in
// flight that it should join.
func (e *Engine) fastEligible(f *Future) bool {
	if e.d.gate.word.Load() != gateOpen {
		return false
	}
	if key := f.w.own.key; key != "" {
		// A streamed call joins a call in flight but is never joined.
		_, inFlight := e.d.dedup.lookup(key)
		return !inFlight
	}
	return true
}

// do runs f, prepared, and waits for it: on the caller's goroutine, in a
// worker's place, when the gate is open; else through the dispatcher. A
// call that others may join runs in a worker's place when its caller's
// context can end, so that the caller may leave while they wait.
func (e *Engine) do(ctx context.Context, f *Future) {
	if shared(&f.w.own) {
		if e.d.gate.word.Load() != gateOpen || !e.submitShared(f, f.ctx.Done() == nil) {
			e.d.submit(ctx, f)
		}
		return
	}
	if e.fastEligible(f) {
		if s := e.d.gate.enter(f); s != nil {
			e.admitFast(f)
			e.watchAlone(f)
			e.runFast(s, f)
			return
		}
	}
	e.d.submit(ctx, f)
}

// TrySubmit is like [Engine.Submit] but never waits for room: when the
// queue is full it fails at once with ErrQueueFull and returns a nil
// future. Requests that merge with one in flight need no room. It also
// fails at once, with a nil future, with ErrClosed after Shutdown or Close,
// with ErrSessionExpired while the session is expired, and with the
// request's own error when it cannot be sent.
func (e *Engine) TrySubmit(ctx context.Context, req *requests.Request) (*Future, error) {
	f, ok := e.prepare(ctx, req)
	if !ok {
		_, err := f.Await(ctx)
		return nil, err
	}
	if e.fromCache(f) {
		return f, nil
	}
	reply := make(chan error, 1)
	if !e.d.post(trySubmitMsg{f: f, reply: reply}) {
		e.settle(f, nil, errors.ErrClosed)
		return nil, errors.ErrClosed
	}
	if err := <-reply; err != nil {
		// Refused before admission: this was never a submission, but its
		// span, started by prepare, ends with the refusal.
		e.stats.submitted.Add(-1)
		e.tel.endRequest(f, nil, err)
		return nil, err
	}
	return f, nil
}

// Do is shorthand for Submit followed by Await with the same ctx.
func (e *Engine) Do(ctx context.Context, req *requests.Request) (*requests.Response, error) {
	f, ok := e.prepare(ctx, req)
	if ok && !e.fromCache(f) {
		e.do(ctx, f)
	}
	return f.Await(ctx)
}

// Get is shorthand for Do with a GET request for path.
func (e *Engine) Get(ctx context.Context, path string, opts ...requests.Option) (*requests.Response, error) {
	return e.Do(ctx, requests.New(http.MethodGet, path, opts...))
}

// Post is shorthand for Do with a POST request for path.
func (e *Engine) Post(ctx context.Context, path string, opts ...requests.Option) (*requests.Response, error) {
	return e.Do(ctx, requests.New(http.MethodPost, path, opts...))
}

// Put is shorthand for Do with a PUT request for path.
func (e *Engine) Put(ctx context.Context, path string, opts ...requests.Option) (*requests.Response, error) {
	return e.Do(ctx, requests.New(http.MethodPut, path, opts...))
}

// Patch is shorthand for Do with a PATCH request for path.
func (e *Engine) Patch(ctx context.Context, path string, opts ...requests.Option) (*requests.Response, error) {
	return e.Do(ctx, requests.New(http.MethodPatch, path, opts...))
}

// Delete is shorthand for Do with a DELETE request for path.
func (e *Engine) Delete(ctx context.Context, path string, opts ...requests.Option) (*requests.Response, error) {
	return e.Do(ctx, requests.New(http.MethodDelete, path, opts...))
}

// Upload is shorthand for Do with a POST of body to path. Build body with
// package upload; it streams, and is sent again in full on a retry or a
// replay after a token refresh. Uploads are never deduplicated.
func (e *Engine) Upload(ctx context.Context, path string, body requests.Body, opts ...requests.Option) (*requests.Response, error) {
	req := requests.New(http.MethodPost, path, opts...)
	req.Body = body
	return e.Do(ctx, req)
}

// Result is one request's outcome from [Engine.Stream]. It is a plain
// value: Response and Err are as [Future.Await] would return them, so at
// least one is set and the zero Result is never yielded. Treat the
// Response's Body as read-only: requests merged by dedup share it.
type Result struct {
	Index    int // position of the request in the input, from 0
	Request  *requests.Request
	Response *requests.Response
	Err      error
}

// Stream submits every request of reqs and yields their results in
// submission order, each as soon as it and every earlier one is done. reqs
// is read on a goroutine of its own, as the window allows, so a slow or
// endless input never holds back results that are ready. At most about
// window requests are outstanding (if window <= 0, Workers plus QueueSize), so
// a stream of any length runs in bounded memory. Breaking out of the loop,
// or ctx ending, cancels the requests still outstanding and stops reading
// reqs. A panic in reqs is raised again in the caller's goroutine.
func (e *Engine) Stream(ctx context.Context, reqs iter.Seq[*requests.Request], window int) iter.Seq[Result] {
	if window <= 0 {
		// Room for every worker and the whole queue: a small window stalls
		// behind any slow request at its head (one waiting out a
		// Retry-After, say) while the workers sit idle.
		window = e.s.Workers + e.s.QueueSize
	}
	return func(yield func(Result) bool) {
		if ctx == nil {
			// A caller's mistake: each request gets the error, none is sent.
			i := 0
			for r := range reqs {
				if !yield(Result{Index: i, Request: r, Err: errNilContext}) {
					return
				}
				i++
			}
			return
		}
		var reader conc.WaitGroup
		defer reader.Wait() // last: after cancel has released the reader
		// The requests' context, watched by one table (streamCtx).
		sc := newStreamCtx(ctx)
		ctx := context.Context(sc)
		cancel := func() { sc.cancel(context.Canceled) }
		defer cancel()
		w := newStreamWindow(window)
		reader.Go(func() {
			defer w.close()
			i := 0
			for r := range reqs {
				if !w.room(ctx) {
					return
				}
				w.push(streamed1{res: Result{Index: i, Request: r}, f: e.Submit(ctx, r)})
				i++
			}
		})
		var batch []streamed1
		for {
			batch = w.take(batch)
			if len(batch) == 0 {
				return
			}
			for k := range batch {
				o := &batch[k]
				o.res.Response, o.res.Err = o.f.wait()
				w.done()
				if !yield(o.res) {
					cancel() // the rest were submitted with ctx: they end by themselves
					return
				}
				*o = streamed1{}
			}
		}
	}
}

// streamed1 is one request of a Stream, submitted and not yet yielded.
type streamed1 struct {
	res Result
	f   *Future
}

// streamWindow is a Stream's window: the FIFO of requests its reader has
// submitted and its consumer has not yet yielded, bounded by size. Each
// side takes what the other made in batches: the consumer takes every
// request submitted so far at once, and a reader waiting for room is woken
// only once a quarter of the window is free, so that one wake-up serves
// many requests either way, as the dispatcher's mailbox does.
//
// Safe for one reader and one consumer; mu protects the fields below it.
type streamWindow struct {
	size, slack int
	wakeReader  chan struct{} // size one
	wakeTaker   chan struct{} // size one

	mu            sync.Mutex
	q             []streamed1
	out           int  // submitted and not yet done
	closed        bool // the reader has returned
	readerWaits   bool
	consumerWaits bool
}

func newStreamWindow(size int) *streamWindow {
	return &streamWindow{size: size, slack: max(1, size/4),
		wakeReader: make(chan struct{}, 1), wakeTaker: make(chan struct{}, 1)}
}

// room waits until the window has room for one more request, and reports
// false if ctx ended first.
func (w *streamWindow) room(ctx context.Context) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		w.mu.Lock()
		if w.out < w.size {
			w.out++
			w.mu.Unlock()
			return true
		}
		w.readerWaits = true
		w.mu.Unlock()
		select {
		case <-w.wakeReader:
		case <-ctx.Done():
			return false
		}
	}
}

// push adds a submitted request, in a place room took, and wakes the
// consumer if it waits.
func (w *streamWindow) push(o streamed1) {
	w.mu.Lock()
	w.q = append(w.q, o)
	wake := w.consumerWaits
	w.consumerWaits = false
	w.mu.Unlock()
	if wake {
		signal(w.wakeTaker)
	}
}

// close tells the consumer that nothing more comes.
func (w *streamWindow) close() {
	w.mu.Lock()
	w.closed = true
	wake := w.consumerWaits
	w.consumerWaits = false
	w.mu.Unlock()
	if wake {
		signal(w.wakeTaker)
	}
}

// take waits for submitted requests and swaps them all for spare, emptied;
// it returns none once the reader has returned and everything was taken.
func (w *streamWindow) take(spare []streamed1) []streamed1 {
	for {
		w.mu.Lock()
		if len(w.q) > 0 {
			b := w.q
			w.q = spare[:0]
			w.mu.Unlock()
			return b
		}
		if w.closed {
			w.mu.Unlock()
			return nil
		}
		w.consumerWaits = true
		w.mu.Unlock()
		<-w.wakeTaker
	}
}

// done frees the place of a request whose result is in, and wakes a
// waiting reader once a batch of places is free.
func (w *streamWindow) done() {
	w.mu.Lock()
	w.out--
	wake := w.readerWaits && w.out <= w.size-w.slack
	if wake {
		w.readerWaits = false
	}
	w.mu.Unlock()
	if wake {
		signal(w.wakeReader)
	}
}

// signal puts a token in ch, a channel of size one, unless one is there.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// SetTokens starts a new session with t, or replaces the current tokens.
// Requests parked on a refresh are replayed with the new access token, and a
// paused engine (after the session expired) accepts requests again.
func (e *Engine) SetTokens(t Tokens) {
	// The actor tells the dispatcher, which resumes; this returns once it
	// has, so a request submitted after SetTokens returns is never refused
	// as paused (even one that finds the queue full, and so reaches the
	// dispatcher by another way than the actor's event).
	done, resumed := make(chan struct{}), make(chan struct{})
	e.actor.ask(setTokensMsg{t: t, done: done, resumed: resumed}, done)
	select {
	case <-resumed:
	case <-e.d.stopped:
	}
}

// TerminateSession ends the session on purpose (logout): the tokens are
// cleared, every pending request fails with ErrSessionExpired, in-flight
// attempts are cancelled, OnSessionExpired runs, and new requests fail fast
// until [Engine.SetTokens].
func (e *Engine) TerminateSession() {
	// The actor tells the dispatcher to fail what is pending and pause
	// before it clears the token; this returns once both are done.
	// The gate closes first: no request starts on the fast path with the
	// token being cleared.
	e.d.gate.block()
	defer e.d.gate.unblock()
	// Nor does the dispatcher hand out a queued request meanwhile: what is
	// pending now fails, it is not sent with the token being cleared.
	e.d.terminating.Add(1)
	defer func() {
		e.d.terminating.Add(-1)
		e.d.mb.poke() // it may have left work queued for this
	}()
	done, failed := make(chan struct{}), make(chan struct{})
	e.actor.ask(clearTokensMsg{done: done, failed: failed}, done)
	select {
	case <-failed:
	case <-e.d.stopped:
	}
}

// Stats is a snapshot of the engine's counters, a plain value; the zero
// Stats is a new engine's. Each counter is read atomically, but not all at
// one instant, so while requests run they need not add up. Once the engine
// is idle, Submitted equals Completed plus Failed.
type Stats struct {
	Submitted int64 // futures created, including those that failed at once
	Completed int64 // futures resolved with a 2xx response
	Failed    int64 // futures resolved with an error
	Queued    int64 // requests waiting for a worker now
	InFlight  int64 // attempts running now
	Retries   int64 // retries scheduled
	Refreshes int64 // successful token refreshes
	DedupHits int64 // requests merged into one already in flight
	Holds     int64 // times a host or route was held (Retry-After, quota at zero)
	Throttled int64 // answers with status 429
	// HookPanics counts panics in hooks: Config.OnError,
	// Auth.OnSessionExpired and Auth.OnTokenRefreshed. Each is also logged
	// at error level to Config.Logger, with its stack; the engine and the
	// hooks after it go on.
	HookPanics int64
	// CacheHits counts requests served from Config.Cache with nothing
	// sent, CacheRevalidations those the server confirmed with a 304, and
	// CacheBytes the body bytes both served from the cache.
	CacheHits          int64
	CacheRevalidations int64
	CacheBytes         int64

	BreakerTrips      int64 // times a circuit breaker of this engine opened
	BreakerRejections int64 // attempts refused, unsent, by an open breaker
	HedgesSent        int64 // hedged attempts sent (see Hedge)
	HedgesWon         int64 // hedged attempts whose answer came first
}

// counters are the engine's statistics. The four that change with every
// request are each written from another goroutine (callers, the
// dispatcher, workers) on other cores: each has a cache line of its own,
// so that one's writes do not evict the others'.
type counters struct {
	submitted atomic.Int64 // callers
	_         [cacheLine - 8]byte
	queued    atomic.Int64 // the dispatcher
	_         [cacheLine - 8]byte
	inFlight  atomic.Int64 // the dispatcher, then workers
	_         [cacheLine - 8]byte
	completed atomic.Int64 // workers, or the dispatcher
	_         [cacheLine - 8]byte

	failed, retries, refreshes, dedupHits, holds, throttled, hookPanics atomic.Int64

	cacheHits, cacheRevalidations, cacheBytes atomic.Int64 // callers and workers (cache.go)

	breakerTrips, breakerRejections, hedgesSent, hedgesWon atomic.Int64
	breakersOpen                                           atomic.Int64 // breakers open or half-open now
}

// cacheLine is the size of a CPU cache line on the common platforms.
const cacheLine = 64

// Stats returns the current counters.
func (e *Engine) Stats() Stats {
	c := &e.stats
	return Stats{
		Submitted: c.submitted.Load(), Completed: c.completed.Load(), Failed: c.failed.Load(),
		Queued: c.queued.Load(), InFlight: c.inFlight.Load(), Retries: c.retries.Load(),
		Refreshes: c.refreshes.Load(), DedupHits: c.dedupHits.Load(),
		Holds: c.holds.Load(), Throttled: c.throttled.Load(), HookPanics: c.hookPanics.Load(),
		CacheHits: c.cacheHits.Load(), CacheRevalidations: c.cacheRevalidations.Load(), CacheBytes: c.cacheBytes.Load(),
		BreakerTrips: c.breakerTrips.Load(), BreakerRejections: c.breakerRejections.Load(),
		HedgesSent: c.hedgesSent.Load(), HedgesWon: c.hedgesWon.Load(),
	}
}

// Shutdown stops accepting requests (they fail with ErrClosed), lets queued,
// parked and in-flight work finish (a token refresh in flight included:
// it is answered and stored), then stops every goroutine. If ctx ends
// first it returns ctx's error and the work goes on; call Close to stop it.
func (e *Engine) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return errNilContext
	}
	e.shutdownOnce.Do(func() {
		e.d.gate.block() // for good: nothing enters the fast path again
		e.d.post(shutdownMsg{})
	})
	select {
	case <-e.finished:
		e.wg.Wait()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the engine at once: every pending request fails with
// ErrClosed and in-flight attempts are cancelled. A token refresh already
// sent gets [Auth.CloseGrace] (2 s by default) to be answered and stored,
// then is abandoned with a warning in the log. Close returns when every
// goroutine the engine started has returned.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.d.gate.block() // for good: nothing enters the fast path again
		close(e.killed)  // then: the token actor bounds its wait from now
		e.d.post(killMsg{})
	})
	<-e.finished
	e.wg.Wait()
	return nil
}
