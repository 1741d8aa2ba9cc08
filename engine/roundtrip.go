package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// The engine under other clients: an http.RoundTripper whose requests take
// the same road as Submit's (queue, token, refresh and replay, retries,
// pacing) but whose answers are handed over alive, body unread, instead of
// being read into memory.
//
// The hand-over protocol. A worker running a streamed call sends the
// request on a context of its own, which follows the attempt's context
// (the dispatcher cancelling call.ctx, the timeout) only until the headers are in,
// and reports the answer with its body unread as outcome.live. The
// dispatcher moves it to call.live, decides, and then either gives it to
// the call's one future (finish) or releases it (cancel, then close) when
// the call is retried, parked, replayed or was already resolved. A streamed call is never entered in the dedup table, so
// it has exactly one future. The RoundTrip that waits on that future owns
// the response from then on; closing its body ends the attempt's context.

// RoundTripper returns an [http.RoundTripper] that sends every request
// through e: it waits in e's queue (for as long as the request's context
// allows), carries e's token when it goes to the base URL's origin, is
// replayed after a token refresh and retried as [Engine.Submit]'s requests
// are, and is paced by e's rate limits. Put it under any client or SDK that
// takes an *http.Client or an http.RoundTripper; [Engine.HTTPClient] is
// shorthand for the common case.
//
// The response's body is the upstream body, streamed: nothing is read into
// memory and MaxResponseBytes does not apply. After retries it is the final
// attempt's. As for any RoundTripper, the caller must close it; closing it
// ends the attempt. A body handed over outlives [Engine.Close].
//
// How a request differs from one sent with Submit:
//
//	                      Submit / Do                      RoundTripper
//	response body         read into memory, bounded by     streamed, unbounded; the
//	                      MaxResponseBytes                 caller reads and closes it
//	non-2xx answer        Response and *errors.HTTPError   *http.Response, nil error
//	redirects             followed by the engine's client  returned as they are, to be
//	                                                       followed by the client above
//	                                                       (each hop is a new request;
//	                                                       the token goes only to hops
//	                                                       on the base URL's origin)
//	per-attempt Timeout   covers reading the body          covers waiting for the
//	                                                       headers; the body is bounded
//	                                                       by the request's context
//	request body          requests.Body, sent again for    sent again only when GetBody
//	                      every attempt                    is set or the body is empty;
//	                                                       otherwise the first attempt
//	                                                       is final (ErrBodyNotReplayable
//	                                                       when it would have been retried)
//	dedup                 identical GET/HEAD share one     may join an identical request
//	                      call                             in flight from Submit (its
//	                                                       body, already in memory, is
//	                                                       shared); never shared itself,
//	                                                       since a live body has one reader
//	refresh failure       ErrRefreshFailed or              the same errors, no response
//	                      ErrSessionExpired
//	per-request options   NoAuth, DedupKey, Timeout, ...   none: the config's defaults
//	Host header           the URL's host                   http.Request.Host when set: sent
//	                                                       as the Host header; the token
//	                                                       goes with it only when the URL
//	                                                       and the Host (scheme, host,
//	                                                       port) are both the base
//	                                                       URL's origin; never merged
//	spans (TracerProvider) end at resolution                end when the headers are in
//
// The returned RoundTripper is safe for concurrent use. After Shutdown or
// Close its requests fail with ErrClosed.
func (e *Engine) RoundTripper() http.RoundTripper { return roundTripper{e} }

// HTTPClient returns a new *http.Client whose Transport is
// [Engine.RoundTripper]. Redirects are followed by this client, at most
// ten, as net/http's default policy does; each hop goes through the engine.
// The client has no Timeout of its own: bound requests with their context.
func (e *Engine) HTTPClient() *http.Client { return &http.Client{Transport: e.RoundTripper()} }

type roundTripper struct{ e *Engine }

// streamed marks a call whose answer is handed over alive. Immutable.
type streamed struct {
	// live1 is the answer of the call's first attempt, allocated with the
	// request (see newLive).
	live1 *liveResponse
	// oneShot is set when the request's body cannot be sent a second time.
	oneShot bool
	// host is the caller's Host override (http.Request.Host), sent as the
	// Host header; empty when it names the URL's own host.
	host string
}

// noFollow marks the context of a streamed attempt: the engine's client
// returns redirects to the caller instead of following them.
type noFollow struct{}

// liveCtx is the context a streamed answer is read on: an attemptCtx that
// follows the attempt's (see newLive), and marks the request noFollow.
type liveCtx struct{ attemptCtx }

func (l *liveCtx) Value(key any) any {
	if _, ok := key.(noFollow); ok {
		return true
	}
	return l.attemptCtx.Value(key)
}

// rtRequest is what RoundTrip allocates for one request, at once: its
// future and the engine's view of the request.
type rtRequest struct {
	f    Future
	req  requests.Request
	st   streamed     // the call's stream
	live liveResponse // the answer of the call's first attempt (call.live1)
}

// RoundTrip sends r through the engine and returns its answer with the body
// unread.
func (t roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	e := t.e
	if r.URL == nil {
		closeRequestBody(r)
		return nil, fmt.Errorf("courier: RoundTrip: request has no URL")
	}
	x := &rtRequest{req: requests.Request{Method: r.Method, Path: r.URL.String(), Header: e.s.hopHeader(r)}}
	req, st := &x.req, &x.st
	var body *callerBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &callerBody{first: r.Body, get: r.GetBody, size: -1}
		if r.ContentLength > 0 {
			body.size = r.ContentLength
		}
		st.oneShot = r.GetBody == nil
		req.Body = body
	}
	if r.Host != "" && r.Host != r.URL.Host {
		st.host = r.Host
	}
	ctx := r.Context()
	f := &x.f
	f.init(ctx, req)
	if e.prepareIn(f, r.URL) {
		c := &f.w.own
		st.live1 = &x.live
		c.stream = st
		if st.host != "" {
			// Another Host is another request: it joins no other. The
			// token goes with it only when both the server it is sent to
			// (the URL) and the one it names (the Host, with the URL's
			// scheme and the scheme's port when it has none) are the base
			// URL's origin: a Host naming the API on a URL to elsewhere
			// must not draw the token there.
			c.key = ""
			c.sameOrigin = c.sameOrigin && origin(&url.URL{Scheme: c.url.Scheme, Host: st.host}) == e.s.origin
		}
		e.do(ctx, f)
	}
	f.wait()
	if body != nil {
		body.closeUnused()
	}
	if l := f.live; l != nil {
		return l.handOver(r), nil
	}
	if resp := f.resp; resp != nil {
		return bufferedResponse(r, resp), nil // joined a call made by Submit
	}
	return nil, f.err
}

// liveResponse is an answer whose body has not been read: the worker hands
// it to the dispatcher, which hands it to the call's future or releases it.
// Once handed over it is the body its caller reads.
type liveResponse struct {
	// ctx is the context the answer is read on: it follows the attempt's
	// until the headers are in, then only the reader (closing the body,
	// or the end of its request's context) or a release ends it.
	ctx  liveCtx
	resp *http.Response
	r    requests.Response // the engine's view of resp, saving an allocation

	// Set by handOver.
	rc     io.ReadCloser   // the upstream body
	caller context.Context // the request's context, which bounds the body
	stop   func() bool     // stops watching caller; nil when it cannot end
	once   sync.Once
}

// release gives up a live response nobody will read. It never waits: the
// context is cancelled first, so closing the body does not drain it.
func (l *liveResponse) release() {
	l.ctx.cancel(context.Canceled)
	l.resp.Body.Close()
}

// handOver returns the response for r's caller, whose context now bounds
// the body. The response is l's own: the caller's from now on.
func (l *liveResponse) handOver(r *http.Request) *http.Response {
	resp := l.resp
	resp.Request = r
	l.rc, l.caller = resp.Body, r.Context()
	if l.caller.Done() != nil {
		l.stop = context.AfterFunc(l.caller, l.callerEnded)
	}
	resp.Body = l
	return resp
}

func (l *liveResponse) callerEnded() { l.ctx.cancel(context.Cause(l.caller)) }

// Read and Close make l the body its caller reads: closing it ends the
// context the answer is read on.
func (l *liveResponse) Read(p []byte) (int, error) { return l.rc.Read(p) }

func (l *liveResponse) Close() error {
	err := l.rc.Close()
	l.once.Do(func() {
		if l.stop != nil {
			l.stop()
		}
		l.ctx.cancel(context.Canceled)
	})
	return err
}

// bufferedResponse turns an answer read into memory into an *http.Response.
func bufferedResponse(r *http.Request, resp *requests.Response) *http.Response {
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", resp.Status, http.StatusText(resp.Status)),
		StatusCode:    resp.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        resp.Header.Clone(),
		Body:          io.NopCloser(bytes.NewReader(resp.Body)),
		ContentLength: int64(len(resp.Body)),
		Request:       r,
	}
}

// callerBody is an http.Request's body as a [requests.Body]: the first
// attempt sends the body itself, later ones what GetBody returns.
type callerBody struct {
	mu    sync.Mutex    // protects first
	first io.ReadCloser // the request's own body until an attempt takes it
	get   func() (io.ReadCloser, error)
	size  int64
}

func (b *callerBody) Open() (io.ReadCloser, error) {
	b.mu.Lock()
	rc := b.first
	b.first = nil
	b.mu.Unlock()
	if rc != nil {
		return rc, nil
	}
	if b.get == nil {
		return nil, errors.ErrBodyNotReplayable
	}
	return b.get()
}

func (b *callerBody) ContentType() string { return "" } // the header says it
func (b *callerBody) Size() int64         { return b.size }

// closeUnused closes the request's body if no attempt took it, as a
// RoundTripper must, and keeps any later attempt from taking it.
func (b *callerBody) closeUnused() {
	b.mu.Lock()
	rc := b.first
	b.first = nil
	b.mu.Unlock()
	if rc != nil {
		rc.Close()
	}
}

func closeRequestBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
}

// retainLimit bounds how much of a non-2xx body a streamed attempt reads
// before its answer is known to be final: a retried or replayed answer's
// connection can then be reused, and a final one still reaches its caller
// whole.
const retainLimit = 64 << 10

// newLive starts the answer of a streamed call's attempt: its context
// takes its values from actx, the attempt's, and follows it (the per-attempt
// timeout, or the call being abandoned) until attemptStreamed has the
// headers. The attempt's request is made on it. The attempt that uses the
// call's first context (which serves one sent attempt only) uses the
// call's first answer too.
func newLive(c *call, actx *attemptCtx) *liveResponse {
	l := c.stream.live1
	if l == nil || actx != &c.ctx1 {
		l = &liveResponse{}
	}
	l.ctx.parent = actx
	l.ctx.follow(actx)
	return l
}

// attemptStreamed sends a streamed call's attempt and reports its answer
// alive. hreq carries the context of l, made by newLive: it bounds the
// wait for the headers; once they are in, the body is read on it until
// only the reader, or a release, ends it.
//
// pace is the attempt's turn with the pacer, which learns from the answer;
// carried says the attempt carried the current token (or none, the session
// having none), so that a 401 is about that token.
func (e *Engine) attemptStreamed(c *call, j job, o *outcome, l *liveResponse, hreq *http.Request, gen uint64, start time.Time, pace paceTicket, carried bool) {
	s, req := e.s, c.req
	fail := func(err error) {
		l.ctx.cancel(context.Canceled)
		o.resp, o.live, o.authFailed = nil, nil, false
		o.err = e.requestError(c, j.attempt, err)
		o.retry = e.retryPolicy(Attempt{Request: req, Number: j.attempt, Err: err, NotSent: notSent(err)})
		e.logAttempt(c, j.attempt, 0, start, gen, o.err)
		e.finalIfOneShot(c, o)
	}
	if c.stream.host != "" {
		hreq.Host = c.stream.host
	}
	hresp, err := e.transport.RoundTrip(hreq)
	if err != nil {
		fail(err)
		return
	}
	e.pacer.observe(pace, hresp.StatusCode, hresp.Header)
	l.r = requests.Response{Status: hresp.StatusCode, Header: hresp.Header, Attempts: j.attempt, Request: req}
	resp := &l.r
	o.resp = resp
	if !resp.OK() && hresp.StatusCode/100 != 3 {
		// Redirects are not followed here: the answer is from hreq's URL.
		after := e.judge(o, j, hreq, hresp, resp, carried)
		if o.retry || (o.authFailed && s.canRefresh()) {
			// The answer may be dropped for another attempt: read a little
			// of it, still within the attempt's time, so that its
			// connection can be reused then, and so that the error of a
			// one-shot request can show it.
			resp.Body = retain(hresp)
		}
		o.err = statusError(c, j.attempt, resp, after)
	}
	if !l.ctx.unfollow(j.ctx) {
		// The attempt timed out or was abandoned before the answer was in.
		hresp.Body.Close()
		fail(j.ctx.Err())
		return
	}
	// From here on only the reader, or a release, ends the body's context.
	e.logAttempt(c, j.attempt, resp.Status, start, gen, nil)
	l.resp = hresp
	o.live = l
	e.finalIfOneShot(c, o)
}

// retain reads up to retainLimit bytes of hresp's body and puts them back
// in front of what is left, so the reader still gets the whole body. It
// returns the bytes read.
func retain(hresp *http.Response) []byte {
	rc := hresp.Body
	b, err := io.ReadAll(io.LimitReader(rc, retainLimit+1))
	switch {
	case err != nil:
		rc.Close()
		hresp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{err}))
	case len(b) <= retainLimit:
		rc.Close() // read to its end: the connection goes back to the pool
		hresp.Body = io.NopCloser(bytes.NewReader(b))
	default:
		hresp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), rc), rc}
	}
	return b[:min(len(b), retainLimit)]
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// finalIfOneShot makes the first attempt of a request whose body cannot be
// sent again final: an answer that would have been retried or replayed
// becomes ErrBodyNotReplayable, wrapping why.
func (e *Engine) finalIfOneShot(c *call, o *outcome) {
	if !c.stream.oneShot || !(o.retry || (o.authFailed && e.s.canRefresh())) {
		return
	}
	why := "retried"
	if o.authFailed {
		why = "replayed after a token refresh"
	}
	o.err = fmt.Errorf("%w: it would have been %s: %w", errors.ErrBodyNotReplayable, why, o.err)
	o.retry, o.authFailed = false, false
	o.resp = nil
	if o.live != nil {
		o.live.release()
		o.live = nil
	}
}

// dropLive releases an answer nobody took: the call was retried, parked,
// replayed, or resolved while its attempt ran. Dispatcher only.
func (c *call) dropLive() {
	if c.live != nil {
		c.live.release()
		c.live = nil
	}
}
