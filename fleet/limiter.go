package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/courier-go/courier/engine"
)

// LimiterOptions tunes a [Limiter]. The zero value gives the defaults. It
// is a plain value: [NewLimiter] keeps a copy.
type LimiterOptions struct {
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

// Limiter is an [engine.Limiter] for a fleet: set it as every process's
// [engine.RateLimit].Limiter, and the limits each engine is configured with
// (global, per host, per route, and their adaptive changes) hold for the
// fleet together, and a hold that one process publishes (a 429 or 503 with
// Retry-After) holds every process.
//
// Waits use GCRA (the generic cell rate algorithm): for each limit key
// Redis keeps one theoretical arrival time (TAT), and a Lua script, in one
// round trip per Wait, reads Redis's clock (TIME, so the hosts' clocks do
// not matter), finds the earliest moment the limit allows the attempt,
// reserves it and answers how long to wait. The attempt waits its turn
// locally, so the fleet's attempts leave evenly spaced, with up to Burst at
// once after a quiet spell. The script also checks the key's hold in Redis,
// so a hold is honoured even by a process that missed its notice.
//
// Holds are written to Redis (a key that expires when the hold ends) and
// announced on a pub/sub channel; a goroutine of the limiter keeps every
// hold it hears of in memory, where [Limiter.HeldUntil] reads them without
// a round trip.
//
// When Redis does not answer, each process paces itself with its share of
// each limit (the limit divided by the number of processes that were alive
// at the last heartbeats) and keeps holds locally, and tries Redis again
// every [LimiterOptions.Retry]. No attempt fails because Redis is down.
//
// Limiter is safe for concurrent use. The zero value is not usable; call
// [NewLimiter], and [Limiter.Close] once the engines using it are closed.
type Limiter struct {
	rdb  redis.UniversalClient
	opts LimiterOptions
	id   string // this process's member in the heartbeat set
	pfx  string // the fleet's key prefix

	live      atomic.Int64 // live processes at the last heartbeats; written by the heartbeat goroutine
	downUntil atomic.Int64 // Unix nanoseconds until which Redis is not tried; 0 when it answers

	mu    sync.Mutex                        // protects local and holds
	local map[engine.LimitKey]*rate.Limiter // fallback buckets
	holds map[engine.LimitKey]time.Time     // holds in force, by this process's clock

	stop chan struct{} // closed by Close
	done chan struct{} // closed when both goroutines have returned
	once sync.Once
}

var _ engine.Limiter = (*Limiter)(nil)

// NewLimiter returns the limiter of the named fleet (see [CheckName]) on
// rdb. It starts two goroutines, the heartbeat and the hold listener, and
// waits briefly for the first heartbeat. The caller keeps ownership of
// rdb, and closes the limiter before it.
func NewLimiter(rdb redis.UniversalClient, name string, opts LimiterOptions) (*Limiter, error) {
	if err := CheckName(name); err != nil {
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
		local: map[engine.LimitKey]*rate.Limiter{},
		holds: map[engine.LimitKey]time.Time{},
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	l.live.Store(1)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultReadTimeout)
	l.beat(ctx)
	ps := rdb.Subscribe(ctx, l.pfx+"holds")
	ps.Receive(ctx) // wait for the subscription if Redis answers
	cancel()
	var wg sync.WaitGroup
	wg.Go(l.heartbeat)
	wg.Go(func() { l.listen(ps) })
	go func() {
		wg.Wait()
		close(l.done)
	}()
	return l, nil
}

// Live returns the number of live processes of the fleet, as of the last
// heartbeats that Redis answered (1 before any).
func (l *Limiter) Live() int { return int(l.live.Load()) }

// Fallback reports whether the limiter paces locally because Redis did not
// answer lately.
func (l *Limiter) Fallback() bool { return l.redisDown() }

// Close stops the limiter's goroutines, waits for them, and takes this
// process out of the live count. It is idempotent and does not close the
// Redis client.
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
var heartbeatScript = redis.NewScript(aclPrelude + `
local no = denied({'ZADD', KEYS[1], '0', ARGV[1]}, {'ZREMRANGEBYSCORE', KEYS[1], '-inf', '0'}, {'PEXPIRE', KEYS[1], ARGV[2]})
if no then return redis.error_reply(no) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
`)

// heartbeat is one of the limiter's goroutines, stopped by Close.
func (l *Limiter) heartbeat() {
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

// holdNotice is what the holds channel carries.
type holdNotice struct {
	From  string `json:"f"` // the publisher's id: a process ignores its own
	Host  string `json:"h"`
	Route string `json:"r,omitempty"`
	MS    int64  `json:"ms"` // how long the hold lasts from when it was published
}

// listen is one of the limiter's goroutines, stopped by Close: it keeps
// the holds that other processes publish. A notice lost while the
// connection was down is covered by the hold check in every Wait.
func (l *Limiter) listen(ps *redis.PubSub) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		<-l.stop
		cancel()
		ps.Close() // ends a Receive in progress
	})
	defer wg.Wait()
	for {
		msg, err := ps.Receive(ctx)
		select {
		case <-l.stop:
			return
		default:
		}
		if err != nil {
			// go-redis reconnects and subscribes again on the next
			// receive; do not spin while Redis is away.
			select {
			case <-l.stop:
				return
			case <-time.After(jitter(50*time.Millisecond, 200*time.Millisecond)):
			}
			continue
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		var n holdNotice
		if json.Unmarshal([]byte(m.Payload), &n) != nil || n.From == l.id || n.Host == "" || n.MS <= 0 {
			continue
		}
		l.holdLocally(engine.LimitKey{Host: n.Host, Route: n.Route}, time.Now().Add(time.Duration(n.MS)*time.Millisecond))
	}
}

// limitScript reserves an attempt's turn under one limit, on Redis's
// clock (microseconds).
//
// KEYS[1] the key's hold, KEYS[2] the key's theoretical arrival time (TAT)
// ARGV[1] the longest wait the caller accepts, or -1; ARGV[2] the emission
// interval T; ARGV[3] the tolerance, burst × T
//
// It answers {0, wait} when the turn is reserved wait from now; {1, wait}
// when the key is held for wait (nothing reserved); {2, wait} when the turn
// is further off than the caller accepts (nothing reserved).
//
// GCRA: the limit allows an attempt at time s when max(TAT, s) + T - s is
// at most the tolerance. The earliest such s is the turn, and the TAT
// becomes max(TAT, s) + T.
var limitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local hold = redis.call('PTTL', KEYS[1])
if hold > 0 then
  return {1, hold * 1000}
end
local T = tonumber(ARGV[2])
local tol = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
local s = math.max(now, tat + T - tol)
local wait = s - now
local maxwait = tonumber(ARGV[1])
if maxwait >= 0 and wait > maxwait then
  return {2, wait}
end
tat = math.max(tat, s) + T
redis.call('SET', KEYS[2], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return {0, wait}
`)

// holdScript holds a key for ARGV[1] milliseconds, unless it is already
// held longer, and announces the hold.
//
// KEYS[1] the key's hold; ARGV[1] milliseconds, ARGV[2] the holds channel,
// ARGV[3] the notice
var holdScript = redis.NewScript(aclPrelude + `
local no = denied({'PUBLISH', ARGV[2], ARGV[3]}, {'SET', KEYS[1], '1', 'PX', ARGV[1]})
if no then return redis.error_reply(no) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
`)

// WaitError is returned by [Limiter.Wait] when the attempt's turn would
// come after its context's deadline. Nothing was reserved. It is a plain
// value, made by Wait; its fields are read-only.
type WaitError struct {
	Key  string        // the limit key, as [engine.LimitKey.String] has it
	Wait time.Duration // how long the attempt would have had to wait
	Held bool          // the wait is a hold on the key
}

func (e *WaitError) Error() string {
	what := "rate limit"
	if e.Held {
		what = "hold"
	}
	return fmt.Sprintf("fleet: %s: %s asks to wait %v, past the context's deadline", e.Key, what, e.Wait.Round(time.Millisecond))
}

// Wait implements [engine.Limiter]: it blocks until one more attempt under
// key may start at limit, fleet-wide, or ctx ends (then it returns ctx's
// error). It fails at once with a [*WaitError] when the turn would come
// after ctx's deadline. It makes one round trip to Redis, more only when
// the key turns out to be held.
func (l *Limiter) Wait(ctx context.Context, key engine.LimitKey, limit engine.Rate) error {
	if limit.PerSecond <= 0 {
		return nil
	}
	limit.Burst = max(limit.Burst, 1)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if l.redisDown() {
			return l.waitLocal(ctx, key, limit)
		}
		wait, held, err := l.reserve(ctx, key, limit)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if werr, ok := err.(*WaitError); ok {
				return werr
			}
			l.downUntil.Store(time.Now().Add(l.opts.Retry).UnixNano())
			return l.waitLocal(ctx, key, limit)
		}
		if held {
			l.holdLocally(key, time.Now().Add(wait))
		}
		if err := waitFor(ctx, key, wait, held); err != nil {
			return err
		}
		if !held {
			return nil
		}
	}
}

// reserve runs the limit script: one round trip.
func (l *Limiter) reserve(ctx context.Context, key engine.LimitKey, limit engine.Rate) (wait time.Duration, held bool, err error) {
	T := 1e6 / limit.PerSecond
	maxWait := "-1"
	if dl, ok := ctx.Deadline(); ok {
		maxWait = strconv.FormatInt(max(time.Until(dl).Microseconds(), 0), 10)
	}
	ks := key.String()
	res, err := limitScript.Run(ctx, l.rdb,
		[]string{l.pfx + "hold:" + ks, l.pfx + "rate:" + ks},
		maxWait, strconv.FormatFloat(T, 'f', 3, 64), strconv.FormatFloat(T*float64(limit.Burst), 'f', 3, 64),
	).Int64Slice()
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
		return 0, false, &WaitError{Key: ks, Wait: wait}
	}
	return wait, false, nil
}

// waitFor sleeps d, or fails at once when d does not fit ctx's deadline.
func waitFor(ctx context.Context, key engine.LimitKey, d time.Duration, held bool) error {
	if d <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return &WaitError{Key: key.String(), Wait: d, Held: held}
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

// waitLocal paces with this process's share of the limit.
func (l *Limiter) waitLocal(ctx context.Context, key engine.LimitKey, limit engine.Rate) error {
	live := max(l.live.Load(), 1)
	r := rate.Limit(limit.PerSecond / float64(live))
	b := max(limit.Burst/int(live), 1)
	l.mu.Lock()
	rl, ok := l.local[key]
	if !ok {
		rl = rate.NewLimiter(r, b)
		l.local[key] = rl
	} else if rl.Limit() != r || rl.Burst() != b {
		rl.SetLimit(r)
		rl.SetBurst(b)
	}
	l.mu.Unlock()
	if err := rl.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &WaitError{Key: key.String(), Wait: time.Duration(float64(time.Second) / float64(r))}
	}
	return nil
}

// Hold implements [engine.Limiter]: no attempt of the fleet under key may
// start before until. It keeps the hold in memory, writes it to Redis
// (unless a longer one is there) and announces it to the other processes;
// while Redis is down it holds this process only.
func (l *Limiter) Hold(key engine.LimitKey, until time.Time) {
	d := time.Until(until)
	if d <= 0 || !l.holdLocally(key, until) || l.redisDown() {
		return
	}
	ms := max(d.Milliseconds(), 1)
	notice, _ := json.Marshal(holdNotice{From: l.id, Host: key.Host, Route: key.Route, MS: ms})
	ctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
	defer cancel()
	err := holdScript.Run(ctx, l.rdb, []string{l.pfx + "hold:" + key.String()},
		strconv.FormatInt(ms, 10), l.pfx+"holds", string(notice)).Err()
	if err != nil {
		l.downUntil.Store(time.Now().Add(l.opts.Retry).UnixNano())
	}
}

// holdLocally extends key's hold in memory to until, and reports whether
// it did (false: a longer hold was already known).
func (l *Limiter) holdLocally(key engine.LimitKey, until time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for k, u := range l.holds { // few keys are held at once
		if !u.After(now) {
			delete(l.holds, k)
		}
	}
	if !until.After(l.holds[key]) {
		return false
	}
	l.holds[key] = until
	return true
}

// HeldUntil implements [engine.Limiter] from memory: the holds this process
// published or heard of.
func (l *Limiter) HeldUntil(key engine.LimitKey) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holds[key]
}
