package engine

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/courier-go/courier/errors"
)

// Defaults applied to zero fields of a [Hedge] that is on.
const (
	// DefaultHedgeBudget is the share of extra attempts hedging may add.
	DefaultHedgeBudget = 0.05
	// hedgeMinSamples is how many latencies of a key must be known before
	// a percentile of them sets its delay.
	hedgeMinSamples = 20
	// hedgeSamples is how many of a key's latest latencies are kept.
	hedgeSamples = 512
	// hedgeBurst bounds the hedges a calm spell may save up for.
	hedgeBurst = 10
)

// Hedge configures hedged requests: when an attempt of an idempotent
// request (GET, HEAD or OPTIONS, without a body, read into memory) has
// not answered after a delay, a second copy of it is sent, and the first
// answer wins; the other copy is cancelled and its answer, if any,
// drained and closed. Both copies are one attempt: the winner's answer is
// what the retry policy, the breaker and the caller see.
//
// The delay is Delay, or the Percentile of the latencies of the key's
// latest answers (the time until their headers came), never less than
// Delay; until 20 answers are known, Delay alone (no hedge when it is
// zero). A hedge waits for the rate limiter like any attempt, and is
// never sent to a host or route that is held (a Retry-After, a quota at
// zero) or whose breaker is not closed, nor past the budget: at most
// Budget extra attempts per attempt that could be hedged, over the
// engine's life, plus ten that a calm spell may save up (the budget
// starts with them): n attempts send at most n×Budget + 10 hedges.
//
// The zero value is off. A Hedge is on for the hosts and routes whose
// Delay or Percentile is set. It is a plain value: [New] copies Hosts and
// Routes. Delays run on [Config.Clock].
type Hedge struct {
	// Delay is how long an attempt may go unanswered before it is hedged;
	// with Percentile, the least such delay.
	Delay time.Duration
	// Percentile, in (0, 100), hedges an attempt once it has taken longer
	// than that percentile of the key's latest answers: 95 for the p95.
	Percentile float64
	// Budget is the share of extra attempts hedges may add, in (0, 1]. If
	// zero, DefaultHedgeBudget (5%).
	Budget float64

	// Hosts overrides Delay and Percentile for the hosts it names, keyed
	// as [RateLimit.Hosts]. A zero policy leaves its host unhedged.
	Hosts map[string]HedgePolicy
	// Routes override their host's policy for requests whose path starts
	// with Prefix, as [RateLimit.Routes] do; the longest prefix wins.
	Routes []HedgeRoute
}

// HedgePolicy is the hedging of one host or route; its fields mean what
// [Hedge]'s of the same names mean. The zero value does not hedge. It is
// a plain value.
type HedgePolicy struct {
	Delay      time.Duration
	Percentile float64
}

// HedgeRoute is a hedging policy for the requests to Host whose path
// starts with Prefix. It is a plain value; the zero HedgeRoute names no
// host, and [New] refuses it.
type HedgeRoute struct {
	// Host is as in [RateLimit.Hosts].
	Host string
	// Prefix starts with "/".
	Prefix string
	Policy HedgePolicy
}

func (p HedgePolicy) on() bool { return p.Delay > 0 || p.Percentile > 0 }

// check names every problem of h through bad.
func (h Hedge) check(bad func(format string, args ...any)) {
	pol := func(name string, p HedgePolicy) {
		if p.Delay < 0 {
			bad("%s.Delay is negative (%s)", name, p.Delay)
		}
		if !(p.Percentile >= 0 && p.Percentile < 100) {
			bad("%s.Percentile %g is not in (0, 100)", name, p.Percentile)
		}
	}
	host := func(name, h string) {
		if h == "" || strings.ContainsAny(h, "/?#@ \t") {
			bad("%s: %q is not a host (a host as in URLs, with its port if it has one: api.example.com, 127.0.0.1:8080)", name, h)
		}
	}
	pol("Hedge", HedgePolicy{Delay: h.Delay, Percentile: h.Percentile})
	if !(h.Budget >= 0 && h.Budget <= 1) {
		bad("Hedge.Budget %g is not in (0, 1]", h.Budget)
	}
	for k, p := range h.Hosts {
		host("Hedge.Hosts", k)
		pol(fmt.Sprintf("Hedge.Hosts[%q]", k), p)
	}
	for i, rt := range h.Routes {
		name := fmt.Sprintf("Hedge.Routes[%d]", i)
		host(name+".Host", rt.Host)
		if !strings.HasPrefix(rt.Prefix, "/") {
			bad("%s.Prefix %q does not start with /", name, rt.Prefix)
		}
		pol(name+".Policy", rt.Policy)
	}
}

// hedger decides when an attempt is hedged and keeps what that needs:
// each key's latest latencies and the budget. A nil *hedger hedges
// nothing. It is safe for concurrent use.
type hedger struct {
	def    HedgePolicy
	hosts  map[string]HedgePolicy
	routes map[string][]HedgeRoute // by normalized host, longest prefix first
	ratio  float64

	clock Clock

	mu      sync.Mutex // protects credit, keys and sweepAt, and every latencies
	credit  float64    // hedges the budget allows now, up to hedgeBurst
	keys    map[LimitKey]*latencies
	sweepAt int // len(keys) at which keys idle for ten minutes are forgotten
}

// latencies is a key's latest answer times; protected by hedger.mu.
type latencies struct {
	ring  [hedgeSamples]time.Duration
	n     int           // samples taken, ever
	cut   time.Duration // the percentile as last computed
	cutAt int           // n when cut was computed
	used  time.Time     // the last answer recorded
}

func newHedger(h Hedge, clock Clock) *hedger {
	x := &hedger{
		clock: clock,
		def:   HedgePolicy{Delay: h.Delay, Percentile: h.Percentile}, ratio: h.Budget,
		hosts: make(map[string]HedgePolicy, len(h.Hosts)), routes: make(map[string][]HedgeRoute),
		keys: make(map[LimitKey]*latencies),
	}
	if x.ratio == 0 {
		x.ratio = DefaultHedgeBudget
	}
	x.credit = hedgeBurst // as the retry budget does, it starts full
	on := x.def.on()
	for k, p := range h.Hosts {
		x.hosts[normalizeHost(k)] = p
		on = on || p.on()
	}
	for _, rt := range h.Routes {
		k := normalizeHost(rt.Host)
		x.routes[k] = append(x.routes[k], rt)
		on = on || rt.Policy.on()
	}
	if !on {
		return nil
	}
	for _, rs := range x.routes {
		slices.SortStableFunc(rs, func(a, b HedgeRoute) int { return len(b.Prefix) - len(a.Prefix) })
	}
	return x
}

// keyOf returns the hedging key of a request for u and its policy.
func (x *hedger) keyOf(u *url.URL) (LimitKey, HedgePolicy) {
	h := hostOf(u)
	for _, rt := range x.routes[h] {
		if underPrefix(u.Path, rt.Prefix) {
			return LimitKey{Host: h, Route: rt.Prefix}, rt.Policy
		}
	}
	if p, ok := x.hosts[h]; ok {
		return LimitKey{Host: h}, p
	}
	return LimitKey{Host: h}, x.def
}

// plan earns the budget its share for one attempt that could be hedged
// and returns the delay after which it is hedged; false when it is not.
func (x *hedger) plan(key LimitKey, p HedgePolicy) (time.Duration, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.credit = min(x.credit+x.ratio, hedgeBurst)
	d := p.Delay
	if p.Percentile > 0 {
		l := x.keys[key]
		if l == nil || l.n < hedgeMinSamples {
			return d, d > 0
		}
		if l.cutAt == 0 || l.n-l.cutAt >= hedgeSamples/32 {
			// Recomputed every few answers, not for every attempt.
			k := min(l.n, hedgeSamples)
			s := slices.Clone(l.ring[:k])
			slices.Sort(s)
			l.cut = s[min(k-1, int(math.Ceil(p.Percentile/100*float64(k)))-1)]
			l.cutAt = l.n
		}
		d = max(d, l.cut)
	}
	return d, d > 0
}

// spend takes one hedge from the budget, or reports false.
func (x *hedger) spend() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.credit < 1 {
		return false
	}
	x.credit--
	return true
}

// refund gives back a hedge that was not sent.
func (x *hedger) refund() {
	x.mu.Lock()
	x.credit = min(x.credit+1, hedgeBurst)
	x.mu.Unlock()
}

// observe records how long an answer of key took.
func (x *hedger) observe(key LimitKey, d time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	now := x.clock.Now()
	l := x.keys[key]
	if l == nil {
		if len(x.keys) >= x.sweepAt {
			// A crawler meets hosts without end: forget the idle ones.
			for k, l := range x.keys {
				if now.Sub(l.used) > idlePaceAfter {
					delete(x.keys, k)
				}
			}
			x.sweepAt = max(64, 2*len(x.keys))
		}
		l = new(latencies)
		x.keys[key] = l
	}
	l.used = now
	l.ring[l.n%hedgeSamples] = d
	l.n++
}

// hedgeable reports whether c's attempts may be sent twice at once: an
// idempotent method with no body, read into memory.
func hedgeable(c *call) bool {
	if c.stream != nil || c.req.Body != nil {
		return false
	}
	switch c.req.MethodOrGet() {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// raced is one copy's end in a hedged attempt.
type raced struct {
	resp  *http.Response
	err   error
	hedge bool // the second copy
	sent  bool // false: the hedge was not sent after all
	took  time.Duration
	// panicked is what the copy's middleware panicked with, if it did.
	panicked any
}

// errNotHedged is the end of a hedge that was not sent.
var errNotHedged = errors.New("hedge not sent")

// roundTrip sends the attempt hreq of c, hedged when its policy says so
// (see [Hedge]). It returns the first answer, or the last error when no
// copy got one. When it returns, the other copy has ended: its context is
// cancelled and its answer drained and closed. The winner's context ends
// when its body is closed, or with the attempt's.
//
// Who does what: the attempt's worker runs this function and owns the
// two goroutines it starts, one per copy; each sends one raced on
// results (room for both, so neither blocks) and returns. The worker
// takes one result per goroutine started before it returns.
func (e *Engine) roundTrip(c *call, hreq *http.Request) (*http.Response, error) {
	x := e.hedger
	if x == nil || !hedgeable(c) {
		return e.transport.RoundTrip(hreq)
	}
	key, pol := x.keyOf(&c.url)
	if !pol.on() {
		return e.transport.RoundTrip(hreq)
	}
	clock := e.s.Clock
	start := clock.Now()
	delay, ok := x.plan(key, pol)
	if !ok {
		resp, err := e.transport.RoundTrip(hreq)
		if err == nil {
			x.observe(key, clock.Now().Sub(start))
		}
		return resp, err
	}

	actx := hreq.Context()
	results := make(chan raced, 2)
	var cancels [2]context.CancelFunc // the copies' contexts, first and hedge
	cancelAll := func() {
		for _, cancel := range cancels {
			if cancel != nil {
				cancel()
			}
		}
	}
	send := func(r *http.Request, hedge bool) {
		defer func() {
			// A panic in middleware is raised again on the worker, whose
			// attempt turns it into the request's error.
			if v := recover(); v != nil {
				results <- raced{hedge: hedge, sent: true, panicked: v, err: errNotHedged}
			}
		}()
		resp, err := e.transport.RoundTrip(r)
		results <- raced{resp: resp, err: err, hedge: hedge, sent: true, took: clock.Now().Sub(start)}
	}
	// The hedge's request is copied now, before the first copy's
	// middleware may change the request it is given.
	second := hreq.Clone(actx)
	pctx, pcancel := context.WithCancel(actx)
	cancels[0] = pcancel
	go send(hreq.WithContext(pctx), false)
	out := 1 // goroutines whose result has not been taken

	timer := clock.NewTimer(delay)
	defer timer.Stop()
	fire := timer.C() // nil once the hedge is on its way
	var lastErr error // the first copy's, else the hedge's
	for {
		select {
		case <-fire:
			fire = nil
			hctx, hcancel := context.WithCancel(actx)
			cancels[1] = hcancel
			out++
			go func() {
				if !e.mayHedge(hctx, c) {
					results <- raced{err: errNotHedged, hedge: true}
					return
				}
				send(second.WithContext(hctx), true)
			}()
		case r := <-results:
			out--
			if r.panicked != nil {
				cancelAll()
				e.drainRaced(results, out)
				panic(r.panicked)
			}
			if r.err == nil {
				// The first answer wins; the other copy is cancelled.
				won := 0
				if r.hedge {
					won = 1
					e.stats.hedgesWon.Add(1)
					r.took -= delay
				}
				x.observe(key, r.took)
				for i, cancel := range cancels {
					if i != won && cancel != nil {
						cancel()
					}
				}
				e.drainRaced(results, out)
				r.resp.Body = &cancelOnClose{ReadCloser: r.resp.Body, cancel: cancels[won]}
				return r.resp, nil
			}
			if r.sent && (lastErr == nil || !r.hedge) {
				lastErr = r.err
			}
			// The first copy failed before its delay, or no copy is left.
			if fire != nil || out == 0 {
				cancelAll()
				e.drainRaced(results, out)
				return nil, lastErr
			}
		}
	}
}

// mayHedge reports whether the hedge of an attempt of c may be sent now:
// the key's breaker is closed, the budget allows it, and the rate limiter
// let it through (it waits for that, with ctx) without a hold.
func (e *Engine) mayHedge(ctx context.Context, c *call) bool {
	if !e.breakers.closed(&c.url) || !e.hedger.spend() {
		return false
	}
	if e.pacer.active {
		if _, held, err := e.pacer.wait(ctx, &c.url, e.s.Clock.Now()); err != nil || held > 0 {
			e.hedger.refund()
			return false
		}
	}
	if ctx.Err() != nil {
		e.hedger.refund()
		return false
	}
	e.stats.hedgesSent.Add(1)
	return true
}

// drainRaced takes the results of the n copies still out, whose contexts
// are cancelled, closing what answers they got.
func (e *Engine) drainRaced(results <-chan raced, n int) {
	for range n {
		if r := <-results; r.resp != nil {
			closeBody(r.resp.Body)
		}
	}
}

// cancelOnClose ends a winning copy's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
