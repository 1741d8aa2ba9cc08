package engine

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// pacer decides when each attempt may start: it maps a request to its limit
// key (a route override, else its host), keeps each key's adaptive state
// (back-off, learned ceiling, known quota), and waits through the
// [Limiter] for holds and buckets. Workers call wait before an attempt and
// observe after its answer; nothing else touches it. It is safe for
// concurrent use.
type pacer struct {
	clock   Clock
	lim     Limiter
	global  Rate // PerSecond 0: no global limit
	perHost Rate
	hosts   map[string]Rate    // by normalized host
	routes  map[string][]Route // by normalized host, longest prefix first
	adapt   Adaptive           // defaults applied
	maxHold time.Duration
	stats   *counters
	log     *zerolog.Logger
	// active is false when nothing can make an attempt wait: no limit is
	// configured and adaptation is off.
	active bool

	mu   sync.Mutex // protects keys, sweepAt and pathHolds, and every keyPace
	keys map[LimitKey]*keyPace
	// plain is the latest key found plain (see keyPace.plainAt): its
	// attempts and answers are counted without mu. Written under mu,
	// whenever a key's state may have changed; read by anyone.
	plain   atomic.Pointer[plainKey]
	sweepAt int
	// pathHolds are the holds this engine placed on single paths (see
	// [HoldScope]), by their key, so that each is counted once.
	pathHolds map[LimitKey]time.Time
}

// plainKey is a key whose state nothing but counting changes while it
// stays plain: no pace, no quota known, nothing to learn. Immutable.
type plainKey struct {
	key   LimitKey
	kp    *keyPace
	epoch uint64
}

// keyPace is one limit key's adaptive state; protected by pacer.mu, but
// for its counters (started, oks, used), which are atomic so that a plain
// key's attempts count them without it.
type keyPace struct {
	configured Rate // PerSecond 0: no configured limit

	// Back-off. rate is the pace now, 0 while the key is not paced at
	// all (a host with no configured limit before its first 429);
	// ceiling is what additive increase restores it to. epoch counts
	// decreases, so the 429s of attempts that were in flight together
	// back off once.
	rate, ceiling float64
	learned       bool // ceiling was learned, not configured
	epoch         uint64
	cleanRun      int64 // 2xx answers at the ceiling since the last 429

	// What a learned ceiling is learned from: 2xx answers since seen.
	// learnAt is set by a 429 to an unpaced key: the ceiling is learned
	// at the first attempt after it (the end of the hold), so that the
	// 2xx answers still in flight at the 429 count too.
	seen    time.Time
	oks     atomic.Int64
	learnAt time.Time

	// The quotas the answers announced: quota is the key's own, named
	// those an X-RateLimit-Resource named (GitHub's "core", "search"...),
	// created as answers name them. resources maps a request path's first
	// two segments to the resource its last answer named, so that an
	// attempt claims from the quota it will spend; at most maxResources
	// are kept. started numbers attempts, so an answer's remaining count
	// can discount the attempts sent after it.
	quota      quotaState
	named      map[string]*quotaState
	resources  map[string]string
	policyRate float64 // RateLimit-Policy's quota per second, 0 unknown
	started    atomic.Uint64

	holdUntil time.Time    // the latest hold this engine placed
	used      atomic.Int64 // last attempt or answer (Unix ns), for forgetting idle keys
}

// plainAt reports whether kp is plain at now, with p.mu held: not paced
// (no configured or learned rate), nothing to learn, no quota known
// (none announced, or its reset passed). An attempt then only takes a
// number and an answer that neither throttles nor speaks of a quota only
// counts; time passing never ends it, only a change under p.mu does.
func (kp *keyPace) plainAt(now time.Time) bool {
	return kp.rate <= 0 && kp.learnAt.IsZero() && len(kp.resources) == 0 && !kp.quota.until.After(now)
}

// publish makes kp, k's state, the plain key when it is plain at now, or
// withdraws it when it was and is not. With p.mu held.
func (p *pacer) publish(k LimitKey, kp *keyPace, now time.Time) {
	if kp.plainAt(now) {
		if pk := p.plain.Load(); pk == nil || pk.kp != kp || pk.epoch != kp.epoch {
			p.plain.Store(&plainKey{key: k, kp: kp, epoch: kp.epoch})
		}
		return
	}
	if pk := p.plain.Load(); pk != nil && pk.kp == kp {
		p.plain.Store(nil)
	}
}

// quotaState is one quota as the latest answer announced it: left
// attempts may start before until (its reset, capped at the pacer's
// maxHold while nothing is left). Protected by pacer.mu.
type quotaState struct {
	left  int64
	until time.Time
	seq   uint64    // the attempt whose answer announced it
	held  time.Time // the end of the latest hold it counted in Stats
}

// maxResources bounds keyPace.resources; past it the map starts afresh.
const maxResources = 256

// paceTicket ties an answer to the attempt's key and to the state the
// attempt started under. It is a plain value.
type paceTicket struct {
	key   LimitKey
	path  string // the request's path, which a route-scoped hold holds
	kp    *keyPace
	epoch uint64
	seq   uint64
	at    time.Time // when the attempt was let go
}

func newPacer(s *settings, stats *counters) *pacer {
	r := s.RateLimit
	p := &pacer{
		clock:   s.Clock,
		lim:     r.Limiter,
		global:  withBurst(Rate{PerSecond: r.PerSecond, Burst: r.Burst}),
		perHost: withBurst(r.PerHost),
		hosts:   make(map[string]Rate, len(r.Hosts)),
		routes:  make(map[string][]Route),
		adapt:   r.Adaptive,
		maxHold: s.Retry.MaxRetryAfter,
		stats:   stats,
		log:     s.Logger,
		keys:    make(map[LimitKey]*keyPace),
	}
	if p.lim == nil {
		p.lim = NewLocalLimiter(s.Clock)
	}
	for h, rt := range r.Hosts {
		p.hosts[normalizeHost(h)] = withBurst(rt)
	}
	for _, rt := range r.Routes {
		h := normalizeHost(rt.Host)
		rt.Rate = withBurst(rt.Rate)
		p.routes[h] = append(p.routes[h], rt)
	}
	for _, rs := range p.routes {
		slices.SortStableFunc(rs, func(a, b Route) int { return len(b.Prefix) - len(a.Prefix) })
	}
	p.active = p.global.PerSecond > 0 || p.perHost.PerSecond > 0 || len(r.Hosts) > 0 ||
		len(r.Routes) > 0 || !r.Adaptive.Disabled
	a := &p.adapt
	if a.Decrease == 0 {
		a.Decrease = DefaultRateDecrease
	}
	if a.Increase == 0 {
		a.Increase = DefaultRateIncrease
	}
	if a.MinPerSecond == 0 {
		a.MinPerSecond = DefaultMinRate
	}
	return p
}

// check names every problem of r through bad.
func (r RateLimit) check(bad func(format string, args ...any)) {
	rate := func(name string, rt Rate) {
		if !(rt.PerSecond >= 0) || math.IsInf(rt.PerSecond, 0) {
			bad("%s.PerSecond is not a rate (%g)", name, rt.PerSecond)
		}
		if rt.Burst < 0 {
			bad("%s.Burst is negative (%d)", name, rt.Burst)
		}
	}
	host := func(name, h string) {
		if h == "" || strings.ContainsAny(h, "/?#@ \t") {
			bad("%s: %q is not a host (a host as in URLs, with its port if it has one: api.example.com, 127.0.0.1:8080)", name, h)
		}
	}
	rate("RateLimit", Rate{PerSecond: r.PerSecond, Burst: r.Burst})
	rate("RateLimit.PerHost", r.PerHost)
	for h, rt := range r.Hosts {
		host("RateLimit.Hosts", h)
		rate(fmt.Sprintf("RateLimit.Hosts[%q]", h), rt)
	}
	for i, rt := range r.Routes {
		name := fmt.Sprintf("RateLimit.Routes[%d]", i)
		host(name+".Host", rt.Host)
		if !strings.HasPrefix(rt.Prefix, "/") {
			bad("%s.Prefix %q does not start with /", name, rt.Prefix)
		}
		rate(name+".Rate", rt.Rate)
	}
	a := r.Adaptive
	if a.HoldScope < HoldAuto || a.HoldScope > HoldRoute {
		bad("RateLimit.Adaptive.HoldScope %d is unknown: want HoldAuto, HoldHost or HoldRoute", int(a.HoldScope))
	}
	if !(a.Decrease >= 0 && a.Decrease < 1) {
		bad("RateLimit.Adaptive.Decrease %g is not in (0, 1)", a.Decrease)
	}
	if !(a.Increase >= 0 && a.Increase <= 1) {
		bad("RateLimit.Adaptive.Increase %g is not in (0, 1]", a.Increase)
	}
	if !(a.MinPerSecond >= 0) || math.IsInf(a.MinPerSecond, 0) {
		bad("RateLimit.Adaptive.MinPerSecond is not a rate (%g)", a.MinPerSecond)
	}
}

// withBurst fills in the default burst of a limit: its rate rounded up, at
// least 1.
func withBurst(r Rate) Rate {
	if r.PerSecond > 0 && r.Burst == 0 {
		r.Burst = max(1, int(math.Ceil(r.PerSecond)))
	}
	return r
}

// normalizeHost is a host as a limit key names it: lower case, without a
// port that is the default of http or https.
func normalizeHost(h string) string {
	h = strings.ToLower(h)
	if strings.HasSuffix(h, ":443") || strings.HasSuffix(h, ":80") {
		h = h[:strings.LastIndexByte(h, ':')]
	}
	return h
}

// hostOf is u's host as a limit key names it; the port is dropped only
// when it is the scheme's default.
func hostOf(u *url.URL) string {
	h := strings.ToLower(u.Host)
	switch {
	case u.Scheme == "https" && strings.HasSuffix(h, ":443"):
		h = h[:len(h)-4]
	case u.Scheme == "http" && strings.HasSuffix(h, ":80"):
		h = h[:len(h)-3]
	}
	return h
}

// keyOf returns the limit key of a request for u and its configured limit.
func (p *pacer) keyOf(u *url.URL) (LimitKey, Rate) {
	h := hostOf(u)
	for _, rt := range p.routes[h] {
		if underPrefix(u.Path, rt.Prefix) {
			return LimitKey{Host: h, Route: rt.Prefix}, rt.Rate
		}
	}
	if rt, ok := p.hosts[h]; ok {
		return LimitKey{Host: h}, rt
	}
	return LimitKey{Host: h}, p.perHost
}

// underPrefix reports whether path is prefix or below it at a "/".
func underPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// idlePaceAfter is how long a key's adaptive state outlives its last use.
const idlePaceAfter = 10 * time.Minute

// state returns k's state, creating it; with p.mu held.
func (p *pacer) state(k LimitKey, configured Rate, now time.Time) *keyPace {
	kp := p.keys[k]
	if kp == nil {
		if len(p.keys) >= p.sweepAt {
			for k, kp := range p.keys {
				if now.UnixNano()-kp.used.Load() > int64(idlePaceAfter) && !kp.holdUntil.After(now) {
					delete(p.keys, k)
					if pk := p.plain.Load(); pk != nil && pk.kp == kp {
						p.plain.Store(nil)
					}
				}
			}
			p.sweepAt = max(64, 2*len(p.keys))
		}
		kp = &keyPace{configured: configured, rate: configured.PerSecond, ceiling: configured.PerSecond, seen: now}
		p.keys[k] = kp
	}
	kp.used.Store(now.UnixNano())
	return kp
}

// limit is the key's bucket now; false when it is not paced. With p.mu
// held.
func (kp *keyPace) limit() (Rate, bool) {
	if kp.rate <= 0 {
		return Rate{}, false
	}
	burst := 1
	if !kp.learned && kp.configured.PerSecond > 0 {
		// Back-off shrinks the burst with the rate.
		burst = max(1, int(float64(kp.configured.Burst)*kp.rate/kp.ceiling))
	}
	return Rate{PerSecond: kp.rate, Burst: burst}, true
}

// claim lets one attempt under kp, to path, start: it spends one of the
// quota the server announced (that of the resource the path's last answer
// named, else the key's own) and numbers the attempt. It reports false,
// with the wait, when the quota is spent until its reset. capped is the
// reset that the claim cut to maxHold by spending the last of the quota,
// zero when it cut none. With p.mu held.
func (p *pacer) claim(kp *keyPace, path string, now time.Time, tk *paceTicket) (wait time.Duration, ok bool, capped time.Duration) {
	st := &kp.quota
	if len(kp.resources) > 0 {
		if n := kp.named[kp.resources[resourcePath(path)]]; n != nil {
			st = n
		}
	}
	if st.until.After(now) {
		if st.left <= 0 {
			return st.until.Sub(now), false, 0
		}
		if st.left--; st.left == 0 {
			capped = p.capSpent(st, now)
		}
	}
	tk.kp, tk.epoch, tk.seq = kp, kp.epoch, kp.started.Add(1)-1
	return 0, true, capped
}

// capSpent cuts the wait for a spent quota's reset to maxHold, as a
// Retry-After's is: an attempt after the cap learns the quota afresh. It
// returns the reset it cut, or zero. With p.mu held.
func (p *pacer) capSpent(st *quotaState, now time.Time) time.Duration {
	if d := st.until.Sub(now); d > p.maxHold {
		st.until = now.Add(p.maxHold)
		return d
	}
	return 0
}

// quotaOf returns the state of the quota an answer to path announced:
// the key's own, or that of the resource the answer named, which the path
// is then taken to spend. With p.mu held.
func (p *pacer) quotaOf(kp *keyPace, resource, path string) *quotaState {
	if resource != "" || len(kp.resources) > 0 {
		if kp.resources == nil || len(kp.resources) >= maxResources {
			kp.resources = make(map[string]string)
		}
		kp.resources[resourcePath(path)] = resource
	}
	if resource == "" {
		return &kp.quota
	}
	st := kp.named[resource]
	if st == nil {
		if kp.named == nil {
			kp.named = make(map[string]*quotaState)
		}
		st = &quotaState{}
		kp.named[resource] = st
	}
	return st
}

// resourcePath is what of a path tells the quota resource it spends: its
// first two segments ("/search/code" of "/search/code/x"), as GitHub's
// resources follow them.
func resourcePath(path string) string {
	n := 0
	for i := 1; i < len(path); i++ {
		if path[i] == '/' {
			if n++; n == 2 {
				return path[:i]
			}
		}
	}
	return path
}

// wait makes an attempt to u wait for its turn, with ctx: the key's bucket
// and the global one. When the key or the request's path is held, or its
// announced quota is spent until a reset, it does not wait: it returns how
// long the hold lasts (held > 0), and the attempt goes back to the
// dispatcher to wait off the workers, so that a held host never keeps a
// worker from other hosts. On success it returns the ticket for
// [pacer.observe]. now is the clock's time as the worker calls; tk.at is
// when the attempt was let go, now itself unless a bucket made it wait.
func (p *pacer) wait(ctx context.Context, u *url.URL, now time.Time) (tk paceTicket, held time.Duration, err error) {
	key, configured := p.keyOf(u)
	tk = paceTicket{key: key, path: u.Path, at: now}
	if !p.adapt.Disabled {
		if d := p.heldUntil(key, u.Path).Sub(now); d > 0 {
			return tk, d, nil
		}
	}
	if pk := p.plain.Load(); pk != nil && pk.key == key && p.global.PerSecond <= 0 {
		// A plain key: what the locked path would do, without the lock.
		pk.kp.used.Store(now.UnixNano())
		tk.kp, tk.epoch, tk.seq = pk.kp, pk.epoch, pk.kp.started.Add(1)-1
		return tk, 0, nil
	}
	p.mu.Lock()
	kp := p.state(key, configured, now)
	p.learn(kp, now)
	d, ok, capped := p.claim(kp, u.Path, now, &tk)
	lim, paced := kp.limit()
	p.publish(key, kp, now)
	p.mu.Unlock()
	if capped > 0 {
		p.logCapped(key, capped)
	}
	if !ok {
		return tk, d, nil
	}
	if paced {
		if err := p.lim.Wait(ctx, key, lim); err != nil {
			return tk, 0, err
		}
		if !p.adapt.Disabled {
			// A hold placed while this attempt waited for its turn: the
			// turn is taken, so wait here.
			if err := p.waitHeld(ctx, key, u.Path); err != nil {
				return tk, 0, err
			}
		}
	}
	if p.global.PerSecond > 0 {
		if err := p.lim.Wait(ctx, LimitKey{}, p.global); err != nil {
			return tk, 0, err
		}
	}
	if paced || p.global.PerSecond > 0 {
		tk.at = p.clock.Now()
	}
	return tk, 0, nil
}

// pathKey is the limit key of a hold on one path of host (see
// [HoldScope]): the path as its route.
func pathKey(host, path string) LimitKey {
	if path == "" {
		path = "/"
	}
	return LimitKey{Host: host, Route: path}
}

// heldUntil is the end of the hold on key or on path, whichever is later.
func (p *pacer) heldUntil(key LimitKey, path string) time.Time {
	until := p.lim.HeldUntil(key)
	if p.adapt.HoldScope != HoldHost {
		if pk := pathKey(key.Host, path); pk != key {
			if t := p.lim.HeldUntil(pk); t.After(until) {
				until = t
			}
		}
	}
	return until
}

// waitHeld waits until no hold is in force on key or on path.
func (p *pacer) waitHeld(ctx context.Context, key LimitKey, path string) error {
	for {
		until := p.heldUntil(key, path)
		d := until.Sub(p.clock.Now())
		if d <= 0 {
			return nil
		}
		if err := sleep(ctx, p.clock, d); err != nil {
			return err
		}
	}
}

// pathScoped reports whether a Retry-After on an answer with status holds
// the request's path alone rather than its key (see [HoldScope]).
func (p *pacer) pathScoped(status int) bool {
	switch p.adapt.HoldScope {
	case HoldHost:
		return false
	case HoldRoute:
		return true
	default:
		return status == http.StatusServiceUnavailable
	}
}

func (p *pacer) logCapped(key LimitKey, reset time.Duration) {
	p.log.Warn().Str("limit_key", key.String()).Dur("reset", reset).Dur("held", p.maxHold).
		Msg("quota spent until a reset past Retry.MaxRetryAfter: held for the cap, then tried again")
}

// observe learns from the answer to the attempt tk was issued for: it
// counts 429s, places holds, notes the announced quota and adapts the
// key's rate.
func (p *pacer) observe(tk paceTicket, status int, h http.Header) {
	if status == http.StatusTooManyRequests {
		p.stats.throttled.Add(1)
	}
	if p.adapt.Disabled || tk.kp == nil {
		return
	}
	// An answer that neither throttles nor speaks of a quota (most of
	// them) only counts: the time the attempt started will do for it.
	now := tk.at
	throttled := status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
	rl := hasRateLimitFields(h)
	if throttled || rl {
		now = p.clock.Now()
	} else if pk := p.plain.Load(); pk != nil && pk.kp == tk.kp {
		// A plain key's answer that changes nothing but its counts: what
		// the locked path below would do, without the lock.
		tk.kp.used.Store(now.UnixNano())
		if status >= 200 && status < 300 {
			tk.kp.oks.Add(1)
		}
		return
	}
	// A Retry-After holds the key, or the request's path alone; a quota
	// at zero holds the key, or, when it is a named resource's, the
	// requests that spend it (claim).
	var hold, keyHold time.Time
	var asked time.Duration // a Retry-After past the cap
	if throttled {
		if d, ok := ParseRetryAfter(h.Get("Retry-After"), now); ok && d > 0 {
			hold = now.Add(min(d, p.maxHold))
			if d > p.maxHold {
				asked = d
			}
		}
	}
	pathHold := !hold.IsZero() && p.pathScoped(status)
	if !pathHold {
		keyHold = hold
	}
	q, hasQuota := Quota{Remaining: -1, Limit: -1}, false
	if rl {
		q, hasQuota = parseRateLimit(h, now)
	}
	var capped time.Duration

	p.mu.Lock()
	kp := tk.kp
	kp.used.Store(now.UnixNano())
	if hasQuota {
		if q.Remaining >= 0 && q.Reset > 0 {
			// Attempts started after this one may each spend one more
			// (claim): they are discounted.
			left, until := q.Remaining-int64(kp.started.Load()-tk.seq-1), now.Add(q.Reset)
			st := p.quotaOf(kp, q.Resource, tk.path)
			switch d := until.Sub(st.until); {
			case st.until.After(now) && d > -time.Second && d < time.Second:
				// The window already known (resets within a second of
				// each other, as seconds from now round). Answers come
				// out of order, and one may come from before attempts
				// that started earlier reached the server: within a
				// window an answer only ever lowers the quota, as each
				// attempt claimed since does. This errs on the safe side.
				st.left = min(st.left, left)
			case !st.until.After(now) || tk.seq >= st.seq:
				// Another window: the latest answer tells it, whatever
				// the one before said (4000 left for an hour, then none
				// for 2 s: held for 2 s). The latest is the answer to
				// the attempt that started last; one to an attempt that
				// started before the one that told the known window is
				// about an older window, and is ignored.
				st.left, st.until, st.seq = left, until, tk.seq
			default:
				left = 1 // nothing learned
			}
			if left <= 0 {
				if st.left <= 0 {
					capped = p.capSpent(st, now)
				}
				switch {
				case q.Remaining > 0:
				case q.Resource == "":
					if st.until.After(keyHold) {
						keyHold = st.until
					}
				case !st.held.After(now):
					p.stats.holds.Add(1)
					st.held = st.until
				}
			}
		}
		if q.Limit > 0 && q.Window > 0 {
			kp.policyRate = float64(q.Limit) / q.Window.Seconds()
		}
	}
	switch {
	case status >= 200 && status < 300:
		kp.oks.Add(1)
		p.recover(kp)
	case status == http.StatusTooManyRequests && tk.epoch == kp.epoch:
		p.backOff(kp, now, later(keyHold, hold), hasQuota)
	}
	newHold := keyHold.After(kp.holdUntil)
	if newHold {
		if !kp.holdUntil.After(now) {
			p.stats.holds.Add(1)
		}
		kp.holdUntil = keyHold
		if kp.learnAt.IsZero() {
			// Learning starts afresh when the hold ends.
			kp.seen = keyHold
			kp.oks.Store(0)
		} else {
			kp.learnAt = keyHold // learn when the longer hold ends
		}
	}
	pk := pathKey(tk.key.Host, tk.path)
	if pathHold {
		if prev := p.pathHolds[pk]; hold.After(prev) {
			if !prev.After(now) {
				p.stats.holds.Add(1)
			}
			p.holdPath(pk, hold, now)
		} else {
			pathHold = false
		}
	}
	p.publish(tk.key, kp, now)
	p.mu.Unlock()
	if newHold {
		p.lim.Hold(tk.key, keyHold)
	}
	if pathHold {
		p.lim.Hold(pk, hold)
	}
	if asked > 0 {
		p.log.Warn().Str("limit_key", tk.key.String()).Dur("retry_after", asked).Dur("held", p.maxHold).
			Msg("Retry-After past Retry.MaxRetryAfter: held for the cap")
	}
	if capped > 0 {
		p.logCapped(tk.key, capped)
	}
}

// holdPath records a hold this engine placed on one path, forgetting the
// ones that have ended when there are many. With p.mu held.
func (p *pacer) holdPath(k LimitKey, until, now time.Time) {
	if p.pathHolds == nil {
		p.pathHolds = make(map[LimitKey]time.Time)
	}
	if len(p.pathHolds) >= 64 {
		for k, t := range p.pathHolds {
			if !t.After(now) {
				delete(p.pathHolds, k)
			}
		}
	}
	p.pathHolds[k] = until
}

// backOff slows kp after a 429: multiplicatively, or, for a key that was not
// paced yet, to a learned ceiling, unless the answer announced the quota
// (hasQuota), which paces the key more closely than a guess. With p.mu
// held.
func (p *pacer) backOff(kp *keyPace, now, hold time.Time, hasQuota bool) {
	kp.epoch++
	kp.cleanRun = 0
	if kp.rate > 0 {
		kp.rate = max(kp.rate*p.adapt.Decrease, min(p.adapt.MinPerSecond, kp.ceiling))
		return
	}
	if hasQuota {
		// The server counts for us: the quota paces the key, and the hold
		// ends its excess.
		return
	}
	if kp.policyRate > 0 {
		// The server's declared quota is the ceiling.
		kp.ceiling = max(kp.policyRate, p.adapt.MinPerSecond)
		kp.rate, kp.learned = kp.ceiling, true
		return
	}
	// Learn the 2xx rate observed up to the end of the hold (the hold has
	// already waited out the excess), once the hold is over (learn).
	kp.learnAt = now
	if hold.After(now) {
		kp.learnAt = hold
	}
}

// learn sets the ceiling a 429 asked for (backOff) once its hold is over:
// the 2xx answers since seen over the time up to the hold's end. With p.mu
// held.
func (p *pacer) learn(kp *keyPace, now time.Time) {
	if kp.learnAt.IsZero() || now.Before(kp.learnAt) {
		return
	}
	if span := kp.learnAt.Sub(kp.seen).Seconds(); kp.oks.Load() > 0 && span > 0 && kp.rate <= 0 {
		kp.ceiling = max(float64(kp.oks.Load())/span, p.adapt.MinPerSecond)
		kp.rate, kp.learned = kp.ceiling, true
	}
	kp.seen, kp.learnAt = kp.learnAt, time.Time{}
	kp.oks.Store(0)
}

// recover restores kp's rate additively after a 2xx. A learned ceiling
// that has held for a minute's worth of answers is dropped, so a host that
// allows more gets the chance to show it. With p.mu held.
func (p *pacer) recover(kp *keyPace) {
	if kp.rate <= 0 {
		return
	}
	if kp.rate < kp.ceiling {
		kp.rate = min(kp.ceiling, kp.rate+p.adapt.Increase*kp.ceiling)
		return
	}
	if !kp.learned {
		return
	}
	kp.cleanRun++
	if float64(kp.cleanRun) >= max(100, 60*kp.ceiling) {
		kp.rate, kp.ceiling, kp.learned, kp.cleanRun = 0, 0, false, 0
		kp.seen = time.Unix(0, kp.used.Load())
		kp.oks.Store(0)
	}
}

// RateLimit paces attempts with token buckets (golang.org/x/time/rate):
// a global limit over every attempt, a limit per host with overrides per
// host and per route, and holds and back-off that follow what the servers
// answer (see [Adaptive]). Every attempt waits, with its request's context,
// for the bucket of its host or route and then for the global one;
// retries and replays after a token refresh wait like first attempts.
//
// The zero value sets no limit of its own but adapts: a Retry-After or an
// exhausted quota holds the host, and 429s slow it down. A RateLimit is a
// plain value: [New] copies Hosts and Routes, and only the Limiter, if one
// is set, is shared.
type RateLimit struct {
	// PerSecond is the sustained rate of attempts over all hosts; 0 means
	// unlimited.
	PerSecond float64
	// Burst is how many attempts may go at once. If zero, the rate rounded
	// up, at least 1.
	Burst int

	// PerHost is the limit of each host that Hosts does not name. The zero
	// value does not limit hosts.
	PerHost Rate
	// Hosts overrides PerHost for the hosts it names. A key is a host as
	// it appears in request URLs, with its port when it has one
	// ("api.example.com", "127.0.0.1:8080"); case does not matter, and a
	// port that is the scheme's default is the same as none. A zero Rate
	// leaves its host unlimited.
	Hosts map[string]Rate
	// Routes override their host's limit for requests whose path starts
	// with Prefix (at a "/" boundary: "/search" covers "/search" and
	// "/search/code", not "/searches"); the longest prefix wins. A route
	// has its own bucket, holds and back-off, apart from its host's.
	Routes []Route

	// Adaptive configures how limits follow the servers' answers.
	Adaptive Adaptive

	// Limiter is where attempts wait and holds are published. If nil,
	// [NewLocalLimiter] on the engine's Clock: limits and holds are this
	// engine's own. A shared Limiter makes them fleet-wide.
	Limiter Limiter
}

// Rate is a token-bucket limit: PerSecond attempts a second on average, up
// to Burst at once. The zero value does not limit. It is a plain value.
type Rate struct {
	// PerSecond is the sustained rate; 0 means unlimited.
	PerSecond float64
	// Burst is how many attempts may go at once. If zero, the rate rounded
	// up, at least 1.
	Burst int
}

// Route is a limit for the requests to Host whose path starts with Prefix.
// It is a plain value. The zero Route names no host, and [New] refuses it.
type Route struct {
	// Host is as in [RateLimit.Hosts].
	Host string
	// Prefix starts with "/".
	Prefix string
	Rate   Rate
}

// Adaptive makes every host's limit follow its answers. The zero value is
// on, with the defaults below. It is a plain value; what it learns is the
// engine's (or its Limiter's) state, not the Adaptive's.
//
// Holds: a Retry-After on a 429 holds every request to that host (or to
// that route, when the request fell under a route override), and one on a
// 503 every request to that path, until the time it gives, capped at
// Retry.MaxRetryAfter (HoldScope changes what is held). A quota at zero in
// the answer's rate-limit fields (see [ParseRateLimit]) holds the host (or
// route) until the quota resets, whatever the status and whether or not
// Retry-After is there too, capped the same way: after the cap, one attempt
// learns the quota afresh. Each answer's quota replaces the one before it.
// A quota of a named resource (X-RateLimit-Resource, as GitHub sends "core"
// and "search") is kept apart: when it is spent it holds only the requests
// whose path (its first two segments) last had an answer naming it, so a
// spent "search" quota never holds "core" requests. While a quota is
// known, no more attempts start before its reset than it has left.
// Holds are logged at warn level when they are capped.
//
// Back-off (AIMD): a 429 multiplies the rate of its host or route by
// Decrease (once for the attempts that were already in flight together),
// down to MinPerSecond, and each 2xx answer adds Increase times the
// ceiling back, up to the ceiling: the configured limit. A host with no
// configured limit is not paced until its first 429; then its ceiling is
// learned: the quota of its RateLimit-Policy when it sends one, else the
// rate of 2xx answers observed from it since it was first seen (or since
// its last hold ended) up to the end of the new hold. It starts there,
// since the hold has already waited out the excess, and adapts from
// there. A host idle for ten minutes forgets what was learned.
type Adaptive struct {
	// Disabled ignores what answers say about limits: no holds, no
	// pacing to quotas, no back-off. A Retry-After still delays the retry
	// of the request it came with.
	Disabled bool
	// HoldScope says what a Retry-After holds. The zero value, HoldAuto,
	// holds what the status speaks for: a 429 (the client is too fast)
	// the host, a 503 (one endpoint is unwell) the request's path.
	HoldScope HoldScope
	// Decrease is the factor a 429 multiplies the rate by, in (0, 1). If
	// zero, DefaultRateDecrease.
	Decrease float64
	// Increase is the share of the ceiling each 2xx answer adds back, in
	// (0, 1]. If zero, DefaultRateIncrease.
	Increase float64
	// MinPerSecond is the lowest rate back-off goes to. If zero,
	// DefaultMinRate.
	MinPerSecond float64
}

// HoldScope says what a Retry-After holds: the request's host (or the
// route override its path falls under), or its path alone. Quotas at zero
// hold the host or route whatever the scope, since a quota is the host's.
// The zero value is [HoldAuto].
type HoldScope int

const (
	// HoldAuto holds the host after a 429 and the path after a 503.
	HoldAuto HoldScope = iota
	// HoldHost holds the host (or route override) after a 429 or a 503.
	HoldHost
	// HoldRoute holds the request's path alone after a 429 or a 503.
	HoldRoute
)

// String returns "auto", "host" or "route".
func (s HoldScope) String() string {
	switch s {
	case HoldAuto:
		return "auto"
	case HoldHost:
		return "host"
	case HoldRoute:
		return "route"
	}
	return fmt.Sprintf("HoldScope(%d)", int(s))
}

// ParseHoldScope reads "auto", "host" or "route".
func ParseHoldScope(v string) (HoldScope, error) {
	for _, s := range []HoldScope{HoldAuto, HoldHost, HoldRoute} {
		if v == s.String() {
			return s, nil
		}
	}
	return 0, fmt.Errorf("hold scope %q: want auto, host or route", v)
}
