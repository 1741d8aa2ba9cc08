package engine

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/redact"
	"github.com/courier-go/courier/requests"
)

// drainLimit bounds how much of an unread body is drained so the connection
// can be reused; past it the connection is closed instead.
const drainLimit = 256 << 10

// slot is one worker's place: its mailbox, and what whoever holds the
// place uses. The dispatcher puts a job in it only when the worker is
// idle, so the send never blocks; the worker delivers its outcome to the
// dispatcher's mailbox and is idle again once the dispatcher has taken it.
// While the place is lent to the fast path (gate.go) its holder is the
// entrant that took it: a job it sent, or a caller running its own attempt.
type slot struct {
	jobs chan job // size 1; closed when the dispatcher exits

	// timer bounds the attempts run in this place; owned by whoever holds
	// the place (its worker, or a caller running its own attempt).
	timer attemptTimer
	// fast is the future of the fast-path attempt holding the place, nil
	// otherwise; under gate.mu.
	fast *Future
	// refunds counts the fast-path first attempts run here that succeeded:
	// the dispatcher adds them to the retry budget before it draws on it.
	// Per place, so that the counting does not bounce a cache line
	// between cores.
	refunds atomic.Int64
	_       [cacheLine - 8]byte
}

// worker runs the attempts the dispatcher (or the fast path) puts in its
// slot until the dispatcher closes it.
func (e *Engine) worker(w *slot) {
	// Each attempt disarms the place's timer as it ends; once the slot is
	// closed the place may be a caller's, and so is its timer.
	t := &w.timer
	for j := range w.jobs {
		o := e.attempt(j, t)
		if j.fast {
			e.endFast(w, j, o)
			continue
		}
		// Counted before any waiter wakes, so a caller who has its result
		// sees the attempt over in Stats.
		e.stats.inFlight.Add(-1)
		// On a 2xx answer read into memory (a streamed one goes through
		// the dispatcher) the worker resolves the first waiter itself: it
		// claims the future, reports, then publishes. Reporting first means
		// the dispatcher has the outcome (the retry budget's refund, say)
		// before the caller can submit anything more.
		var first *requests.Response
		if o.err == nil && o.resp != nil && o.live == nil && j.first.win() {
			o.settled = j.first
			first = e.firstResponse(j, &o)
		}
		// A call nobody else can join (no dedup key) that the worker has
		// resolved leaves the dispatcher nothing urgent: the report can
		// wait for its next wake-up (see mailbox.report).
		lazy := first != nil && j.c.key == ""
		if !e.d.mb.report(o, lazy) && o.live != nil {
			o.live.release() // the engine was closed: nobody takes it
		}
		if first != nil {
			j.first.w.stop.stop()
			e.deliver(j.first, first, nil)
		}
	}
}

// firstResponse is the answer for the job's first waiter, resolved by the
// worker: o.resp itself. When dedup followers may share the call, the
// dispatcher gives them copies of the answer as it came, so the worker
// keeps one in the outcome, by value, before the first waiter's
// Request and Duration are set.
func (e *Engine) firstResponse(j job, o *outcome) *requests.Response {
	resp := o.resp
	switch {
	case j.c.key != "":
		o.pristine = *resp
	case j.first.req != resp.Request:
		cp := *resp
		resp = &cp
	}
	resp.Request = j.first.req
	resp.Duration = e.s.Clock.Now().Sub(j.c.admitted)
	return resp
}

// attemptTimeout is how long one attempt of req may take.
func (e *Engine) attemptTimeout(req *requests.Request) time.Duration {
	if req.Timeout > 0 {
		return req.Timeout
	}
	return e.s.Timeout
}

// attempt runs one attempt of j and reports what happened. It never panics:
// a panic in user code becomes the attempt's final error.
func (e *Engine) attempt(j job, t *attemptTimer) (o outcome) {
	c, req, s := j.c, j.c.req, e.s
	o.c = c
	// One reading of the clock serves the pacer, the attempt's deadline and
	// its duration, unless the pacer makes the attempt wait.
	start := j.at
	if start.IsZero() {
		start = s.Clock.Now()
	}
	var span attemptSpan
	var brk breakerTicket // the attempt's pass through its host's breaker (breaker.go)
	sentNow := false      // the attempt reached the transport
	defer func() {
		if v := recover(); v != nil {
			pe := &errors.PanicError{Where: "request " + req.MethodOrGet() + " " + c.url.Path, Value: v, Stack: debug.Stack()}
			e.log.Error().Str("method", req.MethodOrGet()).Str("path", c.url.Path).Interface("panic", v).Msg("panic during attempt")
			o = outcome{c: c, err: pe}
		}
		e.breakers.done(brk, breakerVerdictOf(&o, sentNow), o.err)
		e.tel.endAttempt(&span, c, &o)
	}()

	ctx := j.ctx
	defer ctx.cancel(context.Canceled) // the attempt is over, whatever happened
	// Attempts count those that reached the transport: until this one
	// does, it is not one of them. A failure before is always final.
	sent := j.attempt - 1
	if err := ctx.Err(); err != nil {
		o.err = e.requestError(c, sent, err) // abandoned before it started
		return o
	}
	// An open breaker fails the attempt before it waits for anything.
	var err error
	if brk, err = e.breakers.allow(&c.url); err != nil {
		o.err = e.requestError(c, sent, err)
		return o
	}
	var pace paceTicket
	if e.pacer.active {
		// The wait for the limiter is not part of the attempt's time.
		if pace, o.held, err = e.pacer.wait(ctx, &c.url, start); err != nil || o.held > 0 {
			if err != nil {
				o.err = e.requestError(c, sent, err)
			}
			return o
		}
		start = pace.at
		if err := e.breakers.recheck(brk); err != nil {
			o.err = e.requestError(c, sent, err)
			return o
		}
	}
	// The deadline is real time, whatever the engine's clock.
	now := start
	if !e.s.systemClock {
		now = time.Now()
	}
	t.arm(ctx, e.attemptTimeout(req), now)
	defer t.disarm()

	// A streamed answer is read on a context of its own, which follows
	// the attempt's only until the headers are in (roundtrip.go).
	var live *liveResponse
	var reqCtx context.Context = ctx
	if c.stream != nil {
		live = newLive(c, ctx)
		reqCtx = &live.ctx
	}
	hreq, err := e.newHTTPRequest(reqCtx, c)
	if err != nil {
		o.err = e.requestError(c, sent, err)
		return o
	}
	snap := e.tokens.Load()
	o.gen = snap.gen
	// carried: the attempt went out with the current token (or with none,
	// when the session has none yet), so a 401 to it is about that token.
	// A caller that set the token's header itself speaks for itself.
	carried := !req.NoAuth && c.sameOrigin && !callerAuth(req, s.authHeader)
	if carried && snap.header != "" {
		hreq.Header[s.authHeader] = []string{snap.header}
	}
	hreq = e.tel.startAttempt(&span, hreq, c, j.attempt)
	sentNow = true
	if c.stream != nil {
		e.attemptStreamed(c, j, &o, live, hreq, snap.gen, start, pace, carried)
		return o
	}

	hresp, err := e.roundTrip(c, hreq) // hedged when Config.Hedge says so
	if err != nil {
		o.err = e.requestError(c, j.attempt, err)
		o.retry = e.retryPolicy(Attempt{Request: req, Number: j.attempt, Err: err, NotSent: notSent(err)})
		e.logAttempt(c, j.attempt, 0, start, snap.gen, o.err)
		return o
	}
	e.pacer.observe(pace, hresp.StatusCode, hresp.Header)
	resp := &requests.Response{Status: hresp.StatusCode, Header: hresp.Header, Attempts: j.attempt, Request: req}
	ok := resp.OK()
	if ok && req.Output != nil {
		n, err := io.Copy(req.Output, hresp.Body)
		closeBody(hresp.Body)
		if err != nil {
			o.err = e.requestError(c, j.attempt, fmt.Errorf("streaming body: %w", err))
			// Bytes already written cannot be taken back; retry only if
			// none were.
			o.retry = n == 0 && e.retryPolicy(Attempt{Request: req, Number: j.attempt, Status: 0, Err: err})
			return o
		}
	} else {
		body, atEnd, err := readBody(hresp, s.MaxResponseBytes)
		if atEnd {
			hresp.Body.Close()
		} else {
			closeBody(hresp.Body)
		}
		if err != nil {
			o.err = e.requestError(c, j.attempt, err)
			if !errors.Is(err, errors.ErrResponseTooLarge) {
				o.retry = e.retryPolicy(Attempt{Request: req, Number: j.attempt, Err: err})
			}
			e.logAttempt(c, j.attempt, resp.Status, start, snap.gen, o.err)
			return o
		}
		resp.Body = body
	}
	if c.cached != nil {
		resp = e.cacheAnswer(ctx, c, resp, start)
		ok = resp.OK()
	}
	e.logAttempt(c, j.attempt, resp.Status, start, snap.gen, nil)
	if ok {
		o.resp = resp
		return o
	}

	o.resp = resp
	o.err = statusError(c, j.attempt, resp, e.judge(&o, j, hreq, hresp, resp, carried))
	return o
}

// judge reads a non-2xx answer into o: how long its Retry-After asks to
// wait (returned, capped), whether it rejected the token, and whether the
// retry policy wants another attempt.
func (e *Engine) judge(o *outcome, j job, hreq *http.Request, hresp *http.Response, resp *requests.Response, carried bool) time.Duration {
	s := e.s
	after, hasAfter := ParseRetryAfter(hresp.Header.Get("Retry-After"), s.Clock.Now())
	if hasAfter {
		after = min(after, s.Retry.MaxRetryAfter)
	}
	o.retryAfter, o.hasAfter = after, hasAfter
	// Only the token's own origin can reject it: a 401 from elsewhere (a
	// redirect took the request there, without the token) is that
	// server's answer, never a reason to refresh.
	answeredBy := hreq.URL
	if hresp.Request != nil && hresp.Request.URL != nil {
		answeredBy = hresp.Request.URL // the last hop of the redirects
	}
	o.authFailed = carried && e.sameOrigin(answeredBy) && e.authFailed(resp.Status, resp.Header)
	if !o.authFailed {
		o.retry = e.retryPolicy(Attempt{Request: j.c.req, Number: j.attempt, Status: resp.Status, Header: resp.Header})
	}
	return after
}

func (e *Engine) retryPolicy(a Attempt) bool {
	// The cancellation of the request itself is never worth a retry, nor
	// is a failure that would happen again (failfast.go).
	if a.Err != nil && (errors.Is(a.Err, context.Canceled) || cannotSucceed(a.Err)) {
		return false
	}
	return e.s.Retry.Policy(a)
}

func (e *Engine) authFailed(status int, h http.Header) bool { return e.s.Auth.AuthFailed(status, h) }

func (e *Engine) requestError(c *call, attempt int, err error) error {
	// *url.Error repeats the method and URL the RequestError already names.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &errors.RequestError{Method: c.req.MethodOrGet(), URL: redact.URL(&c.url), Attempts: attempt, Err: redactErr(err)}
}

func (e *Engine) logAttempt(c *call, attempt, status int, start time.Time, gen uint64, err error) {
	ev := e.log.Debug()
	if ev == nil {
		return
	}
	ev.Str("method", c.req.MethodOrGet()).Str("path", c.url.Path).Int("status", status).
		Int("attempt", attempt).Dur("duration", e.s.Clock.Now().Sub(start)).Uint64("token_gen", gen).
		AnErr("error", err).Msg("attempt")
}

// newHTTPRequest builds the attempt's request, opening the body afresh.
// It does what http.NewRequestWithContext would, without parsing a URL the
// call already holds: the request gets its own copy, which middleware may
// change freely. The method was checked by Submit.
func (e *Engine) newHTTPRequest(ctx context.Context, c *call) (*http.Request, error) {
	req := c.req
	u := new(url.URL)
	*u = c.url
	// Room for the token, the configured headers and the request's own.
	n := 1 + len(e.s.Headers) + len(req.Header)
	if req.Body != nil {
		n++
	}
	if req.IdempotencyKey != "" {
		n++
	}
	r := http.Request{
		Method: req.MethodOrGet(), URL: u, Host: u.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, n),
	}
	if req.Body != nil {
		rc, err := req.Body.Open()
		if err != nil {
			return nil, fmt.Errorf("opening body: %w", err)
		}
		r.Body = rc
		r.GetBody = req.Body.Open
		if size := req.Body.Size(); size >= 0 {
			r.ContentLength = size
			if size == 0 {
				rc.Close()
				r.Body = http.NoBody
			}
		}
		if ct := req.Body.ContentType(); ct != "" {
			r.Header["Content-Type"] = []string{ct}
		}
	}
	for k, vs := range e.s.Headers {
		r.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	for k, vs := range req.Header {
		r.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	if req.IdempotencyKey != "" {
		r.Header["Idempotency-Key"] = []string{req.IdempotencyKey}
	}
	e.conditional(r.Header, c)
	return r.WithContext(withSensitive(ctx, req.SensitiveHeaders)), nil
}

// closeBody drains a little of what is left so the connection can be
// reused, then closes it.
func closeBody(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, drainLimit)
	rc.Close()
}

// statusError builds the error for a non-2xx answer.
func statusError(c *call, attempt int, resp *requests.Response, retryAfter time.Duration) *errors.HTTPError {
	return &errors.HTTPError{
		Status:     resp.Status,
		Header:     resp.Header,
		Body:       resp.Body,
		Method:     c.req.MethodOrGet(),
		URL:        redact.URL(&c.url),
		Attempts:   attempt,
		RetryAfter: retryAfter,
	}
}
