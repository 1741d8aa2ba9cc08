package engine

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/courier-go/courier/errors"
)

// Defaults applied to zero fields of a [Breaker] or [BreakerPolicy] that
// is on.
const (
	DefaultBreakerWindow      = 30 * time.Second
	DefaultBreakerCooldown    = 30 * time.Second
	DefaultBreakerMinRequests = 10
	DefaultBreakerProbes      = 3
)

// Breaker configures circuit breakers: one per host, with overrides per
// host and per route keyed as [RateLimit]'s are, each counting the
// attempts to its key. A breaker is closed while attempts succeed; it
// trips (opens) when any condition that is set holds:
//
//   - ConsecutiveFailures attempts in a row failed;
//   - Failures attempts failed within the last Window;
//   - at least MinRequests attempts were answered within the last Window,
//     and the share of them that failed is FailureRatio or more.
//
// While open, every attempt to its key fails at once, without being sent,
// with an error that matches [errors.ErrCircuitOpen] (a
// *[errors.CircuitOpenError] that says until when, wrapping the last
// failure), retries included; requests to other hosts go on. After
// Cooldown it half-opens: up to Probes attempts go through, and the other
// requests fail as while open. When Probes of them have succeeded it
// closes; when one fails it opens again for another Cooldown.
//
// A failure is what the retry policy treats as one: a connection that
// failed, an attempt that timed out, a 5xx answer. Other answers succeed,
// 4xx included, except 429, which counts neither way: the pacer answers it
// (see [Adaptive]). Attempts the caller cancelled count neither way.
//
// The zero value is off: no breaker. A Breaker is on when its
// ConsecutiveFailures, Failures or FailureRatio is set, and then its other
// zero fields mean their defaults. A Breaker is a plain value: [New]
// copies Hosts and Routes, and only the Store, if one is set, is shared.
// Cooldowns and windows run on [Config.Clock].
type Breaker struct {
	// ConsecutiveFailures trips the breaker after that many failed
	// attempts in a row; 0 sets no such condition.
	ConsecutiveFailures int
	// Failures trips the breaker after that many failed attempts within
	// Window; 0 sets no such condition.
	Failures int
	// FailureRatio, in (0, 1], trips the breaker when that share of the
	// attempts answered within Window failed, once there were at least
	// MinRequests of them; 0 sets no such condition.
	FailureRatio float64
	// MinRequests is the least number of attempts within Window that
	// FailureRatio judges. If zero, DefaultBreakerMinRequests.
	MinRequests int
	// Window is how far back Failures and FailureRatio look. If zero,
	// DefaultBreakerWindow.
	Window time.Duration
	// Cooldown is how long the breaker stays open before it half-opens.
	// If zero, DefaultBreakerCooldown.
	Cooldown time.Duration
	// Probes is how many attempts a half-open breaker lets through at
	// once, and how many of them must succeed for it to close. If zero,
	// DefaultBreakerProbes.
	Probes int

	// Hosts overrides the policy above for the hosts it names, keyed as
	// [RateLimit.Hosts]. A policy that sets no condition leaves its host
	// without a breaker.
	Hosts map[string]BreakerPolicy
	// Routes override their host's policy for requests whose path starts
	// with Prefix, as [RateLimit.Routes] do; the longest prefix wins. A
	// route has a breaker of its own, apart from its host's.
	Routes []BreakerRoute

	// Store, if set, shares the breakers' state between engines: a breaker
	// that trips publishes it there, and an engine whose breaker for that
	// key is closed opens it too, until the same instant. If nil, each
	// engine's breakers are its own. Package fleet has one on Redis.
	Store BreakerStore
}

// BreakerPolicy is a breaker's policy for one host or route; its fields
// mean what [Breaker]'s of the same names mean. The zero value sets no
// condition: no breaker for that key. It is a plain value.
type BreakerPolicy struct {
	ConsecutiveFailures int
	Failures            int
	FailureRatio        float64
	MinRequests         int
	Window              time.Duration
	Cooldown            time.Duration
	Probes              int
}

// BreakerRoute is a breaker policy for the requests to Host whose path
// starts with Prefix. It is a plain value; the zero BreakerRoute names no
// host, and [New] refuses it.
type BreakerRoute struct {
	// Host is as in [RateLimit.Hosts].
	Host string
	// Prefix starts with "/".
	Prefix string
	Policy BreakerPolicy
}

// BreakerState is the state of one circuit breaker. The zero value is
// BreakerClosed.
type BreakerState int

// The states of a circuit breaker.
const (
	BreakerClosed   BreakerState = iota // attempts go through and are counted
	BreakerOpen                         // attempts fail at once
	BreakerHalfOpen                     // a few probes go through
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// BreakerChange is what [Config.OnBreakerChange] is told when a breaker
// changes state. It is a plain value.
type BreakerChange struct {
	Key      LimitKey // the host, and the route when the breaker is a route's
	From, To BreakerState
	// Until is when a breaker that opened half-opens; zero for the other
	// changes.
	Until time.Time
	// Err is the failure that opened the breaker: the last attempt's, or,
	// when another engine sharing the Store opened it, a text naming that
	// engine's. Nil for the other changes.
	Err error
}

// BreakerStore shares circuit breakers' openings between engines (see
// [Breaker.Store]). Implementations must be safe for concurrent use: the
// engine calls them from its workers, never from its dispatcher, so they
// may do I/O, but OpenUntil runs before every attempt to a key with a
// breaker: serve it from memory, kept current in the background. A store
// that cannot be reached should answer that nothing is open, so that each
// engine falls back to its own breakers.
type BreakerStore interface {
	// Open publishes that key's breaker opened and stays open until until,
	// an instant on the engine's clock, because of cause (an error's text,
	// never a secret: URLs in it carry no query). An opening that ends
	// earlier than one already published changes nothing.
	Open(key LimitKey, until time.Time, cause string)
	// OpenUntil returns until when key's breaker was last published open,
	// and why; a zero time when it never was or that has passed.
	OpenUntil(key LimitKey) (until time.Time, cause string)
}

// breakerBuckets is how many slices a breaker's window is counted in: the
// window slides by a tenth of its length.
const breakerBuckets = 10

// breakers holds every circuit breaker of an engine. Workers call allow
// before an attempt and done after it; nothing else touches them. A nil
// *breakers has no breaker at all: its methods return at once. It is safe
// for concurrent use.
type breakers struct {
	clock  Clock
	stats  *counters
	store  BreakerStore
	emit   func(BreakerChange) // tells OnBreakerChange and the log; called without mu
	def    breakerPolicy
	hosts  map[string]breakerPolicy        // by normalized host
	routes map[string][]breakerRoutePolicy // by normalized host, longest prefix first

	mu      sync.Mutex // protects keys, sweepAt and every circuit
	keys    map[LimitKey]*circuit
	sweepAt int // len(keys) at which idle closed breakers are forgotten
}

// breakerPolicy is a policy with its defaults applied; the zero value is
// off.
type breakerPolicy struct {
	consecutive, failures int
	ratio                 float64
	minRequests, probes   int
	window, cooldown      time.Duration
}

type breakerRoutePolicy struct {
	prefix string
	pol    breakerPolicy
}

// circuit is one key's breaker; protected by breakers.mu.
type circuit struct {
	key   LimitKey
	pol   breakerPolicy
	state BreakerState
	// gen counts state changes: an answer to an attempt let through
	// under an older one is about a state that is gone, and is ignored.
	gen     uint64
	run     int                     // consecutive failures, while closed
	buckets [breakerBuckets]counted // the window, while closed
	until   time.Time               // while open: when it half-opens
	cause   error                   // the last failure, as a rejection wraps it
	probing int                     // half-open: probes let through, not yet answered
	probed  int                     // half-open: probes that succeeded
	used    time.Time               // the last attempt it let through or refused
}

// counted is one slice of a window: attempts answered, and failed, from
// start on.
type counted struct {
	start          time.Time
	answered, fail int
}

// breakerTicket ties an attempt's answer to the breaker that let it
// through. The zero ticket is for an attempt no breaker watches.
type breakerTicket struct {
	c     *circuit
	gen   uint64
	probe bool
}

// breakerVerdict is how an attempt's end counts for its breaker.
type breakerVerdict int

const (
	breakerIgnore breakerVerdict = iota
	breakerSuccess
	breakerFailure
)

func (p BreakerPolicy) withDefaults() breakerPolicy {
	if p.ConsecutiveFailures <= 0 && p.Failures <= 0 && p.FailureRatio <= 0 {
		return breakerPolicy{}
	}
	q := breakerPolicy{
		consecutive: p.ConsecutiveFailures, failures: p.Failures, ratio: p.FailureRatio,
		minRequests: p.MinRequests, probes: p.Probes, window: p.Window, cooldown: p.Cooldown,
	}
	if q.minRequests == 0 {
		q.minRequests = DefaultBreakerMinRequests
	}
	if q.probes == 0 {
		q.probes = DefaultBreakerProbes
	}
	if q.window == 0 {
		q.window = DefaultBreakerWindow
	}
	if q.cooldown == 0 {
		q.cooldown = DefaultBreakerCooldown
	}
	return q
}

func (p breakerPolicy) on() bool { return p.probes > 0 }

// policy is b's own policy, as a BreakerPolicy.
func (b Breaker) policy() BreakerPolicy {
	return BreakerPolicy{
		ConsecutiveFailures: b.ConsecutiveFailures, Failures: b.Failures, FailureRatio: b.FailureRatio,
		MinRequests: b.MinRequests, Window: b.Window, Cooldown: b.Cooldown, Probes: b.Probes,
	}
}

// check names every problem of b through bad.
func (b Breaker) check(bad func(format string, args ...any)) {
	pol := func(name string, p BreakerPolicy) {
		for _, f := range []struct {
			field string
			neg   bool
			v     any
		}{
			{"ConsecutiveFailures", p.ConsecutiveFailures < 0, p.ConsecutiveFailures}, {"Failures", p.Failures < 0, p.Failures},
			{"MinRequests", p.MinRequests < 0, p.MinRequests}, {"Probes", p.Probes < 0, p.Probes},
			{"Window", p.Window < 0, p.Window}, {"Cooldown", p.Cooldown < 0, p.Cooldown},
		} {
			if f.neg {
				bad("%s.%s is negative (%v)", name, f.field, f.v)
			}
		}
		if !(p.FailureRatio >= 0 && p.FailureRatio <= 1) || math.IsNaN(p.FailureRatio) {
			bad("%s.FailureRatio %g is not in (0, 1]", name, p.FailureRatio)
		}
	}
	host := func(name, h string) {
		if h == "" || strings.ContainsAny(h, "/?#@ \t") {
			bad("%s: %q is not a host (a host as in URLs, with its port if it has one: api.example.com, 127.0.0.1:8080)", name, h)
		}
	}
	pol("Breaker", b.policy())
	for h, p := range b.Hosts {
		host("Breaker.Hosts", h)
		pol(fmt.Sprintf("Breaker.Hosts[%q]", h), p)
	}
	for i, rt := range b.Routes {
		name := fmt.Sprintf("Breaker.Routes[%d]", i)
		host(name+".Host", rt.Host)
		if len(rt.Prefix) == 0 || rt.Prefix[0] != '/' {
			bad("%s.Prefix %q does not start with /", name, rt.Prefix)
		}
		pol(name+".Policy", rt.Policy)
	}
}

// newBreakers returns the breakers s configures, or nil when none is on.
func newBreakers(s *settings, stats *counters, emit func(BreakerChange)) *breakers {
	cfg := s.Breaker
	b := &breakers{
		clock: s.Clock, stats: stats, store: cfg.Store, emit: emit,
		def:    cfg.policy().withDefaults(),
		hosts:  make(map[string]breakerPolicy, len(cfg.Hosts)),
		routes: make(map[string][]breakerRoutePolicy),
		keys:   make(map[LimitKey]*circuit),
	}
	on := b.def.on()
	for h, p := range cfg.Hosts {
		b.hosts[normalizeHost(h)] = p.withDefaults()
		on = on || p.withDefaults().on()
	}
	for _, rt := range cfg.Routes {
		h := normalizeHost(rt.Host)
		b.routes[h] = append(b.routes[h], breakerRoutePolicy{prefix: rt.Prefix, pol: rt.Policy.withDefaults()})
		on = on || rt.Policy.withDefaults().on()
	}
	if !on {
		return nil
	}
	for _, rs := range b.routes {
		slices.SortStableFunc(rs, func(a, b breakerRoutePolicy) int { return len(b.prefix) - len(a.prefix) })
	}
	return b
}

// keyOf returns the breaker key of a request for u and its policy.
func (b *breakers) keyOf(u *url.URL) (LimitKey, breakerPolicy) {
	h := hostOf(u)
	for _, rt := range b.routes[h] {
		if underPrefix(u.Path, rt.prefix) {
			return LimitKey{Host: h, Route: rt.prefix}, rt.pol
		}
	}
	if p, ok := b.hosts[h]; ok {
		return LimitKey{Host: h}, p
	}
	return LimitKey{Host: h}, b.def
}

// allow lets an attempt to u through its breaker, or refuses it with a
// *errors.CircuitOpenError while the breaker is open (or half-open with
// every probe out). Every ticket it returns must be given back to done.
func (b *breakers) allow(u *url.URL) (breakerTicket, error) {
	if b == nil {
		return breakerTicket{}, nil
	}
	key, pol := b.keyOf(u)
	if !pol.on() {
		return breakerTicket{}, nil
	}
	var remote time.Time
	var remoteCause string
	if b.store != nil {
		remote, remoteCause = b.store.OpenUntil(key)
	}
	now := b.clock.Now()
	var changes []BreakerChange
	b.mu.Lock()
	c := b.circuit(key, pol, now)
	if remote.After(now) && remote.After(c.until) {
		// Another engine opened it: open it here too, until then.
		var cause error
		if remoteCause != "" {
			cause = errors.New("another engine: " + remoteCause)
		}
		if c.state != BreakerOpen {
			ch := b.open(c, now, cause)
			ch.Until = remote
			changes = append(changes, ch)
		}
		c.until = remote
	}
	tk, err := b.admit(c, now, &changes)
	b.mu.Unlock()
	b.tell(changes)
	if err != nil {
		b.stats.breakerRejections.Add(1)
	}
	return tk, err
}

// admit is allow's decision; with b.mu held.
func (b *breakers) admit(c *circuit, now time.Time, changes *[]BreakerChange) (breakerTicket, error) {
	if c.state == BreakerOpen {
		if now.Before(c.until) {
			return breakerTicket{}, c.refusal()
		}
		*changes = append(*changes, b.change(c, BreakerHalfOpen))
		c.probing, c.probed = 0, 0
	}
	if c.state == BreakerHalfOpen {
		if c.probing >= c.pol.probes {
			return breakerTicket{}, c.refusal()
		}
		c.probing++
		return breakerTicket{c: c, gen: c.gen, probe: true}, nil
	}
	return breakerTicket{c: c, gen: c.gen}, nil
}

// closed reports whether the breaker of a request for u lets everything
// through: it has none, or it is closed.
func (b *breakers) closed(u *url.URL) bool {
	if b == nil {
		return true
	}
	key, pol := b.keyOf(u)
	if !pol.on() {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.keys[key]
	return c == nil || c.state == BreakerClosed
}

// recheck refuses the attempt tk let through when its breaker has opened
// since, as it does while the attempt waited for its turn at the rate
// limiter.
func (b *breakers) recheck(tk breakerTicket) error {
	c := tk.c
	if c == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.gen == tk.gen || c.state != BreakerOpen {
		return nil
	}
	b.stats.breakerRejections.Add(1)
	return c.refusal()
}

// refusal is the error of an attempt c does not let through.
func (c *circuit) refusal() error {
	return &errors.CircuitOpenError{Host: c.key.String(), Until: c.until, Err: c.cause}
}

// circuit returns key's breaker, creating it; with b.mu held. A closed
// breaker idle for ten minutes is forgotten (a crawler meets hosts
// without end); an answer to an attempt it let through is then lost,
// which only forgets counts that were about to be forgotten anyway.
func (b *breakers) circuit(key LimitKey, pol breakerPolicy, now time.Time) *circuit {
	c := b.keys[key]
	if c == nil {
		if len(b.keys) >= b.sweepAt {
			for k, c := range b.keys {
				if c.state == BreakerClosed && now.Sub(c.used) > idlePaceAfter {
					delete(b.keys, k)
				}
			}
			b.sweepAt = max(64, 2*len(b.keys))
		}
		c = &circuit{key: key, pol: pol}
		b.keys[key] = c
	}
	c.used = now
	return c
}

// done counts the end of the attempt tk let through: v says how, and
// cause is the attempt's error when it failed.
func (b *breakers) done(tk breakerTicket, v breakerVerdict, cause error) {
	c := tk.c
	if c == nil {
		return
	}
	now := b.clock.Now()
	var changes []BreakerChange
	b.mu.Lock()
	if tk.probe && tk.gen == c.gen {
		c.probing--
	}
	if tk.gen != c.gen || v == breakerIgnore {
		b.mu.Unlock()
		return
	}
	switch c.state {
	case BreakerClosed:
		s := c.slice(now)
		s.answered++
		if v == breakerFailure {
			s.fail++
			c.run++
			if c.trips(now) {
				changes = append(changes, b.open(c, now, keptCause(cause)))
			}
		} else {
			c.run = 0
		}
	case BreakerHalfOpen:
		if v == breakerFailure {
			changes = append(changes, b.open(c, now, keptCause(cause)))
			break
		}
		c.probed++
		if c.probed >= c.pol.probes {
			changes = append(changes, b.change(c, BreakerClosed))
		}
	}
	b.mu.Unlock()
	for _, ch := range changes {
		if ch.To != BreakerOpen {
			continue
		}
		b.stats.breakerTrips.Add(1)
		if b.store != nil {
			b.store.Open(ch.Key, ch.Until, errText(ch.Err))
		}
	}
	b.tell(changes)
}

// open trips c until a cooldown from now; with b.mu held.
func (b *breakers) open(c *circuit, now time.Time, cause error) BreakerChange {
	ch := b.change(c, BreakerOpen)
	c.until = now.Add(c.pol.cooldown)
	c.cause = cause
	ch.Until, ch.Err = c.until, cause
	return ch
}

// change moves c to state, forgetting what was counted; with b.mu held.
func (b *breakers) change(c *circuit, to BreakerState) BreakerChange {
	ch := BreakerChange{Key: c.key, From: c.state, To: to}
	switch {
	case c.state == BreakerClosed:
		b.stats.breakersOpen.Add(1)
	case to == BreakerClosed:
		b.stats.breakersOpen.Add(-1)
	}
	c.state = to
	c.gen++
	c.run, c.probing, c.probed = 0, 0, 0
	c.buckets = [breakerBuckets]counted{}
	return ch
}

func (b *breakers) tell(changes []BreakerChange) {
	for _, ch := range changes {
		b.emit(ch)
	}
}

// slice is the window's slice that now falls in, cleared if it held an
// older slice's counts.
func (c *circuit) slice(now time.Time) *counted {
	width := max(c.pol.window/breakerBuckets, 1)
	start := now.Truncate(width)
	s := &c.buckets[(start.UnixNano()/int64(width))%breakerBuckets]
	if !s.start.Equal(start) {
		*s = counted{start: start}
	}
	return s
}

// trips reports whether c's counts call for it to open; with b.mu held.
func (c *circuit) trips(now time.Time) bool {
	p := c.pol
	if p.consecutive > 0 && c.run >= p.consecutive {
		return true
	}
	var answered, failed int
	since := now.Add(-p.window)
	for _, s := range c.buckets {
		if s.start.After(since) {
			answered += s.answered
			failed += s.fail
		}
	}
	if p.failures > 0 && failed >= p.failures {
		return true
	}
	return p.ratio > 0 && answered >= p.minRequests && float64(failed) >= p.ratio*float64(answered)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// keptCause is the failure a rejection wraps: an answer's status, method
// and URL, without the headers and body that were another request's.
func keptCause(err error) error {
	var he *errors.HTTPError
	if errors.As(err, &he) {
		cp := *he
		cp.Header, cp.Body = nil, nil
		return &cp
	}
	return err
}

// breakerVerdictOf judges an attempt's outcome for its breaker; sent says
// whether it reached the transport.
func breakerVerdictOf(o *outcome, sent bool) breakerVerdict {
	switch {
	case !sent || o.held > 0:
		return breakerIgnore
	case o.resp != nil && o.resp.Status >= 500:
		return breakerFailure
	case o.resp != nil && o.resp.Status == 429:
		return breakerIgnore
	case o.resp != nil || o.err == nil:
		return breakerSuccess
	case errors.Is(o.err, errors.ErrResponseTooLarge):
		return breakerSuccess // the server answered
	case errors.Is(o.err, context.Canceled):
		return breakerIgnore // the caller left, or the engine closed
	}
	var pe *errors.PanicError
	if errors.As(o.err, &pe) {
		return breakerIgnore
	}
	return breakerFailure
}

// breakerChanged tells OnBreakerChange and the log of a breaker's change,
// on the hooks goroutine. Workers call it, with no lock held.
func (e *Engine) breakerChanged(ch BreakerChange) {
	if fn := e.s.OnBreakerChange; fn != nil {
		e.hooks.push("OnBreakerChange", func() { fn(ch) })
	}
	log := e.log
	e.hooks.push("log", func() {
		ev := log.Info()
		if ch.To == BreakerOpen {
			ev = log.Warn().Time("until", ch.Until).AnErr("cause", ch.Err)
		}
		ev.Str("breaker", ch.Key.String()).Str("from", ch.From.String()).Str("to", ch.To.String()).Msg("circuit breaker")
	})
}
