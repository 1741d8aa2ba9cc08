package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// LimitKey names what a limit applies to: the whole engine (the zero
// LimitKey), one host, or one route of a host. It is a plain comparable
// value, usable as a map key; [LimitKey.String] gives a stable text form
// for stores that key by strings.
type LimitKey struct {
	// Host is the host as it appears in request URLs, in lower case, with
	// its port when the URL names one other than the scheme's default
	// ("api.example.com", "127.0.0.1:8080"). Empty for the global limit.
	Host string
	// Route is the path prefix of a route override ("/search"), or empty
	// for the host's own limit.
	Route string
}

// String returns "global" for the global key, the host for a host's key,
// and host plus route ("api.example.com/search") for a route's.
func (k LimitKey) String() string {
	if k.Host == "" {
		return "global"
	}
	return k.Host + k.Route
}

// Limiter is where every attempt waits for its turn and every hold is
// published. The engine owns the policy (which key a request falls under,
// what rate that key has now, when a host must be held) and calls the
// Limiter for the mechanism; replacing it changes where the buckets and
// the holds live, not what they mean. Set one with [RateLimit.Limiter]; nil
// (the default) means [NewLocalLimiter] on the engine's clock: buckets and
// holds in this process's memory. A fleet-wide implementation keeps them in
// a store that every process shares (package fleet does so on Redis), so a
// fleet together respects one limit and a Retry-After seen by one process
// holds the host for all.
//
// Before every attempt the engine does, for the key of the request's host
// or route:
//
//  1. HeldUntil(key): when it returns an instant after the engine clock's
//     now, the attempt is not made yet; the request waits off the workers
//     and comes back to step 1 at that instant. Holds are on host and
//     route keys, never on the global key.
//  2. Wait(ctx, key, limit), when the key has a rate at all (a host with
//     no configured or learned limit has none and skips this step).
//  3. HeldUntil(key) again: a hold published during the wait delays the
//     attempt too (the worker waits it out, its turn taken).
//  4. Wait(ctx, LimitKey{}, global), when a global limit is set.
//
// After an answer that asks for a hold (Retry-After on a 429 or 503, or a
// quota at zero), the engine calls Hold(key, until).
//
// Implementations must be safe for concurrent use: every worker calls
// them. The engine never calls them from its dispatcher goroutine, so a
// call may do I/O; Wait blocks by design, and HeldUntil and Hold should
// return quickly (HeldUntil runs before every attempt: serve it from memory,
// kept current by a subscription, rather than with a round trip). A
// Limiter that cannot reach its store should fall back to local limiting
// rather than fail attempts: a Wait error fails the attempt with it.
type Limiter interface {
	// Wait blocks until one more attempt under key may start at limit, or
	// until ctx ends, and then returns ctx's error (the attempt fails with
	// it). limit.PerSecond is above zero and limit.Burst at least 1. The
	// engine adapts a key's limit (back-off after a 429, pacing to a quota
	// the server announced), so the limit passed may change from one call
	// to the next for the same key: the latest applies from then on,
	// without forgetting the attempts already let through.
	Wait(ctx context.Context, key LimitKey, limit Rate) error

	// Hold publishes that no attempt under key may start before until, an
	// instant on the engine's clock (wall-clock time in production). A
	// hold earlier than one already in force changes nothing: holds only
	// ever extend.
	Hold(key LimitKey, until time.Time)

	// HeldUntil returns the end of the hold in force on key, whether this
	// process or another one sharing the Limiter published it, or the zero
	// Time when there is none. A hold that has ended may be returned as
	// well as the zero Time.
	HeldUntil(key LimitKey) time.Time
}

// NewLocalLimiter returns the default [Limiter]: an x/time/rate token bucket
// and a hold per key, in memory, timed by clock (if nil, SystemClock).
// Keys idle for a while are forgotten, so a crawler touching many hosts
// runs in bounded memory. It is safe for concurrent use.
func NewLocalLimiter(clock Clock) Limiter {
	if clock == nil {
		clock = SystemClock
	}
	return &localLimiter{clock: clock, keys: make(map[LimitKey]*localKey)}
}

// localLimiter is the in-memory [Limiter].
type localLimiter struct {
	clock Clock

	mu      sync.Mutex // protects keys and sweepAt
	keys    map[LimitKey]*localKey
	sweepAt int // len(keys) that triggers the next sweep of idle keys
	// held is set by the first Hold: until then HeldUntil, which runs
	// before every attempt, for the host and for the path, needs no lock.
	held atomic.Bool
}

type localKey struct {
	bucket *rate.Limiter // nil until the key's first Wait
	hold   time.Time
	used   time.Time // last Wait or Hold, for forgetting idle keys
}

// idleKeyAfter is how long a key of the local limiter is kept unused
// before it may be forgotten; its bucket has long been full by then.
const idleKeyAfter = 10 * time.Minute

// key returns k's entry, creating it; with l.mu held.
func (l *localLimiter) key(k LimitKey, now time.Time) *localKey {
	lk := l.keys[k]
	if lk == nil {
		if len(l.keys) >= l.sweepAt {
			l.sweep(now)
		}
		lk = &localKey{}
		l.keys[k] = lk
	}
	lk.used = now
	return lk
}

// sweep forgets keys idle for idleKeyAfter whose hold has ended. It runs
// when the map has doubled since the last sweep, so its cost is spread
// over the insertions; with l.mu held.
func (l *localLimiter) sweep(now time.Time) {
	for k, lk := range l.keys {
		if now.Sub(lk.used) > idleKeyAfter && !lk.hold.After(now) {
			delete(l.keys, k)
		}
	}
	l.sweepAt = max(64, 2*len(l.keys))
}

func (l *localLimiter) Wait(ctx context.Context, k LimitKey, limit Rate) error {
	l.mu.Lock()
	now := l.clock.Now()
	lk := l.key(k, now)
	if lk.bucket == nil {
		lk.bucket = rate.NewLimiter(rate.Limit(limit.PerSecond), limit.Burst)
	} else {
		if lk.bucket.Limit() != rate.Limit(limit.PerSecond) {
			lk.bucket.SetLimitAt(now, rate.Limit(limit.PerSecond))
		}
		if lk.bucket.Burst() != limit.Burst {
			lk.bucket.SetBurstAt(now, limit.Burst)
		}
	}
	r := lk.bucket.ReserveN(now, 1)
	l.mu.Unlock()
	d := r.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	if err := sleep(ctx, l.clock, d); err != nil {
		r.CancelAt(l.clock.Now())
		return err
	}
	return nil
}

func (l *localLimiter) Hold(k LimitKey, until time.Time) {
	l.held.Store(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := l.key(k, l.clock.Now())
	if until.After(lk.hold) {
		lk.hold = until
	}
}

func (l *localLimiter) HeldUntil(k LimitKey) time.Time {
	if !l.held.Load() {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lk := l.keys[k]; lk != nil {
		return lk.hold
	}
	return time.Time{}
}

// sleep waits d on clock, or until ctx ends and returns its error.
func sleep(ctx context.Context, clock Clock, d time.Duration) error {
	t := clock.NewTimer(d)
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}
