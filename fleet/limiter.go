package fleet

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// Limit is a rate and a burst. The zero value does not limit.
type Limit struct {
	// PerSecond is the sustained rate; 0 means unlimited.
	PerSecond float64
	// Burst is how many requests may go at once after a quiet spell. If
	// zero, 1.
	Burst int
}

func (l Limit) on() bool { return l.PerSecond > 0 }

func (l Limit) burst() int { return max(l.Burst, 1) }

// LimiterOptions sets a [Limiter]'s limits, all for the whole fleet
// together. The zero value limits nothing.
type LimiterOptions struct {
	// Global paces every request of the fleet.
	Global Limit
	// PerHost paces the requests to each host, for hosts not in Hosts.
	PerHost Limit
	// Hosts paces the requests to the named hosts (as in a URL, with the
	// port when there is one), overriding PerHost.
	Hosts map[string]Limit
	// Heartbeat is how often the limiter tells Redis that its process is
	// alive; the fleet counts live processes to split the limits when Redis
	// is unreachable. If zero, [DefaultHeartbeat].
	Heartbeat time.Duration
	// Retry is how long the limiter paces locally after Redis failed to
	// answer, before it tries Redis again. If zero, [DefaultRetry].
	Retry time.Duration
}

// Defaults of [LimiterOptions].
const (
	DefaultHeartbeat = time.Second
	DefaultRetry     = 500 * time.Millisecond
)

// Limiter paces the requests of a whole fleet: a global limit, per-host
// limits and host holds, kept in Redis and evaluated there.
//
// The algorithm is GCRA (the generic cell rate algorithm): for each limit
// Redis keeps one theoretical arrival time, and a Lua script, in one round
// trip per request, finds the earliest moment every limit that applies
// allows the request, reserves it, and answers how long to wait. The
// script reads Redis's clock (TIME), so the hosts' clocks do not matter. A
// request waits its turn locally, so the fleet's requests leave evenly
// spaced, with up to Burst at once after a quiet spell.
//
// [Limiter.Hold] stops every process of the fleet from sending to a host
// for a while, as a 429 or 503 with Retry-After asks.
//
// When Redis does not answer, each process paces itself with its share of
// the limits (each limit divided by the number of processes that were
// alive at the last heartbeat) and keeps its holds locally, and tries
// Redis again every [LimiterOptions.Retry]. No request fails because Redis
// is down.
//
// Limiter is safe for concurrent use. The zero value is not usable; call
// [NewLimiter], and [Limiter.Close] when done.
type Limiter struct {
	rdb  redis.UniversalClient
	opts LimiterOptions
	id   string // this process's member in the heartbeat set
	pfx  string // the fleet's key prefix

	live      atomic.Int64 // live processes at the last heartbeat; read by Wait, written by the heartbeat goroutine
	downUntil atomic.Int64 // Unix nanoseconds until which Redis is not tried; 0 when it answers

	mu    sync.Mutex               // protects local and holds
	local map[string]*rate.Limiter // fallback limiters: "" for the global one, else by host
	holds map[string]time.Time     // hosts held, by this process's clock

	stop chan struct{} // closed by Close
	done chan struct{} // closed when the heartbeat goroutine has returned
	once sync.Once
}

// NewLimiter returns the limiter of the named fleet (see [CheckName]) on
// rdb, and starts its heartbeat, whose first beat it waits for briefly.
// The caller keeps ownership of rdb, closes the limiter, then rdb.
func NewLimiter(rdb redis.UniversalClient, name string, opts LimiterOptions) (*Limiter, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	for host, l := range opts.Hosts {
		if err := checkLimit("host "+host, l); err != nil {
			return nil, err
		}
	}
	if err := checkLimit("global limit", opts.Global); err != nil {
		return nil, err
	}
	if err := checkLimit("per-host limit", opts.PerHost); err != nil {
		return nil, err
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	l := &Limiter{
		rdb:   rdb,
		opts:  opts,
		id:    newOwner(),
		pfx:   keyPrefix(name),
		local: map[string]*rate.Limiter{},
		holds: map[string]time.Time{},
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	l.live.Store(1)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultReadTimeout)
	l.beat(ctx)
	cancel()
	go l.heartbeat()
	return l, nil
}

func checkLimit(what string, l Limit) error {
	if l.PerSecond < 0 || math.IsNaN(l.PerSecond) || math.IsInf(l.PerSecond, 0) {
		return fmt.Errorf("fleet: %s: rate %v is not a positive number", what, l.PerSecond)
	}
	if l.Burst < 0 {
		return fmt.Errorf("fleet: %s: burst %d is negative", what, l.Burst)
	}
	return nil
}

// Live returns the number of live processes of the fleet seen at the last
// heartbeat that Redis answered (1 before any).
func (l *Limiter) Live() int { return int(l.live.Load()) }

// Close stops the heartbeat, takes this process out of the live count, and
// waits for the heartbeat goroutine. It is idempotent and does not close
// the Redis client.
func (l *Limiter) Close() error {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		ctx, cancel := context.WithTimeout(context.Background(), DefaultReadTimeout)
		defer cancel()
		l.rdb.ZRem(ctx, l.pfx+"live", l.id)
	})
	return nil
}

// heartbeatScript adds the member to the live set with a deadline of
// now + ttl on Redis's clock, drops members past their deadline, and
// answers how many are left.
//
// KEYS[1] live set; ARGV[1] member, ARGV[2] ttl in milliseconds
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
`)

// heartbeat is the limiter's one goroutine, owned by Close.
func (l *Limiter) heartbeat() {
	defer close(l.done)
	t := time.NewTicker(l.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.opts.Heartbeat)
			l.beat(ctx)
			cancel()
		}
	}
}

func (l *Limiter) beat(ctx context.Context) {
	ttl := 3 * l.opts.Heartbeat
	n, err := heartbeatScript.Run(ctx, l.rdb, []string{l.pfx + "live"}, l.id, strconv.FormatInt(ttl.Milliseconds(), 10)).Int64()
	if err == nil && n > 0 {
		l.live.Store(n)
	}
}

// limitScript reserves a request's turn under every limit that applies, on
// Redis's clock (microseconds).
//
// KEYS[1] the host's hold; KEYS[2..] one theoretical arrival time (TAT)
// per limit
// ARGV[1] the longest wait the caller accepts, or -1; then per limit:
// emission interval T, tolerance (burst × T)
//
// It answers {0, wait} when the request's turn is reserved wait from now;
// {1, wait} when the host is held for wait (nothing reserved); {2, wait}
// when the turn is further than the caller accepts (nothing reserved).
//
// GCRA: a limit allows a request at time s when max(TAT, s) + T - s is at
// most the tolerance. The earliest such s over all limits is the turn, and
// each TAT becomes max(TAT, s) + T.
var limitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local hold = redis.call('PTTL', KEYS[1])
if hold > 0 then
  return {1, hold * 1000}
end
local s = now
local tats = {}
for i = 2, #KEYS do
  local T = tonumber(ARGV[2 * i - 2])
  local tol = tonumber(ARGV[2 * i - 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  tats[i] = tat
  local e = tat + T - tol
  if e > s then s = e end
end
local wait = s - now
local maxwait = tonumber(ARGV[1])
if maxwait >= 0 and wait > maxwait then
  return {2, wait}
end
for i = 2, #KEYS do
  local T = tonumber(ARGV[2 * i - 2])
  local tat = tats[i]
  if tat < s then tat = s end
  tat = tat + T
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
end
return {0, wait}
`)

// holdScript holds a host for ARGV[1] milliseconds, unless it is already
// held longer.
//
// KEYS[1] the host's hold
var holdScript = redis.NewScript(`
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
`)

// WaitError is returned by [Limiter.Wait] when the request's turn would
// come after its context's deadline. Nothing was reserved.
type WaitError struct {
	Host string
	Wait time.Duration // how long the request would have had to wait
	Held bool          // the wait is a hold on the host
}

func (e *WaitError) Error() string {
	what := "rate limit"
	if e.Held {
		what = "hold on the host"
	}
	return fmt.Sprintf("fleet: %s: %s asks to wait %v, past the context's deadline", e.Host, what, e.Wait.Round(time.Millisecond))
}

// Wait blocks until a request to host may be sent under the fleet's limits,
// or ctx ends. It returns ctx's error when ctx ends first, and a
// [*WaitError] at once when the wait would not fit ctx's deadline.
func (l *Limiter) Wait(ctx context.Context, host string) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if until, ok := l.localHold(host); ok {
			if err := l.waitFor(ctx, host, time.Until(until), true); err != nil {
				return err
			}
			continue
		}
		if l.redisDown() {
			return l.waitLocal(ctx, host)
		}
		wait, held, err := l.reserve(ctx, host)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if werr, ok := err.(*WaitError); ok {
				return werr
			}
			l.downUntil.Store(time.Now().Add(l.opts.Retry).UnixNano())
			return l.waitLocal(ctx, host)
		}
		if err := l.waitFor(ctx, host, wait, held); err != nil {
			return err
		}
		if !held {
			return nil
		}
	}
}

// limitsFor returns the keys and GCRA arguments of the limits on host.
func (l *Limiter) limitsFor(host string) (keys []string, args []any) {
	keys = []string{l.pfx + "hold:" + host}
	args = []any{nil} // ARGV[1], the longest wait, set by the caller
	add := func(key string, lim Limit) {
		T := 1e6 / lim.PerSecond
		keys = append(keys, key)
		args = append(args, strconv.FormatFloat(T, 'f', 3, 64), strconv.FormatFloat(T*float64(lim.burst()), 'f', 3, 64))
	}
	if l.opts.Global.on() {
		add(l.pfx+"rate", l.opts.Global)
	}
	if lim, ok := l.opts.Hosts[host]; ok {
		if lim.on() {
			add(l.pfx+"rate:"+host, lim)
		}
	} else if l.opts.PerHost.on() {
		add(l.pfx+"rate:"+host, l.opts.PerHost)
	}
	return keys, args
}

// reserve runs the limit script: one round trip.
func (l *Limiter) reserve(ctx context.Context, host string) (wait time.Duration, held bool, err error) {
	keys, args := l.limitsFor(host)
	args[0] = "-1"
	if dl, ok := ctx.Deadline(); ok {
		args[0] = strconv.FormatInt(max(time.Until(dl).Microseconds(), 0), 10)
	}
	res, err := limitScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return 0, false, err
	}
	if len(res) != 2 {
		return 0, false, fmt.Errorf("fleet: rate limit: unexpected answer of %d values", len(res))
	}
	wait = time.Duration(res[1]) * time.Microsecond
	switch res[0] {
	case 1:
		return wait, true, nil
	case 2:
		return 0, false, &WaitError{Host: host, Wait: wait}
	}
	return wait, false, nil
}

// waitFor sleeps d, or fails at once when d does not fit ctx's deadline.
func (l *Limiter) waitFor(ctx context.Context, host string, d time.Duration, held bool) error {
	if d <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return &WaitError{Host: host, Wait: d, Held: held}
	}
	return sleep(ctx, d)
}

func (l *Limiter) redisDown() bool {
	until := l.downUntil.Load()
	if until == 0 {
		return false
	}
	if time.Now().UnixNano() < until {
		return true
	}
	l.downUntil.CompareAndSwap(until, 0)
	return false
}

// Fallback reports whether the limiter paces locally because Redis did not
// answer lately.
func (l *Limiter) Fallback() bool { return l.redisDown() }

// waitLocal paces with this process's share of the limits.
func (l *Limiter) waitLocal(ctx context.Context, host string) error {
	live := max(l.live.Load(), 1)
	var lims []*rate.Limiter
	l.mu.Lock()
	share := func(key string, lim Limit) {
		r := rate.Limit(lim.PerSecond / float64(live))
		b := max(lim.burst()/int(live), 1)
		rl, ok := l.local[key]
		if !ok {
			rl = rate.NewLimiter(r, b)
			l.local[key] = rl
		} else if rl.Limit() != r || rl.Burst() != b {
			rl.SetLimit(r)
			rl.SetBurst(b)
		}
		lims = append(lims, rl)
	}
	if l.opts.Global.on() {
		share("", l.opts.Global)
	}
	if lim, ok := l.opts.Hosts[host]; ok {
		if lim.on() {
			share(host, lim)
		}
	} else if l.opts.PerHost.on() {
		share(host, l.opts.PerHost)
	}
	l.mu.Unlock()
	for _, rl := range lims {
		if err := rl.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &WaitError{Host: host, Wait: time.Duration(float64(time.Second) / float64(rl.Limit()))}
		}
	}
	return nil
}

func (l *Limiter) localHold(host string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	until, ok := l.holds[host]
	if !ok {
		return time.Time{}, false
	}
	if !time.Now().Before(until) {
		delete(l.holds, host)
		return time.Time{}, false
	}
	return until, true
}

// Hold stops the whole fleet from sending to host for d (unless it is
// already held longer), as a 429 or 503 with Retry-After asks. The hold is
// kept locally too, so this process waits even while Redis is down.
func (l *Limiter) Hold(ctx context.Context, host string, d time.Duration) {
	if d <= 0 {
		return
	}
	until := time.Now().Add(d)
	l.mu.Lock()
	if until.After(l.holds[host]) {
		l.holds[host] = until
	}
	l.mu.Unlock()
	if l.redisDown() {
		return
	}
	ms := max(d.Milliseconds(), 1)
	if err := holdScript.Run(ctx, l.rdb, []string{l.pfx + "hold:" + host}, strconv.FormatInt(ms, 10)).Err(); err != nil && ctx.Err() == nil {
		l.downUntil.Store(time.Now().Add(l.opts.Retry).UnixNano())
	}
}
