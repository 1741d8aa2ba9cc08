package fleet

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/courier-go/courier/engine"
)

// BreakerStore is an [engine.BreakerStore] for a fleet: set it as every
// process's [engine.Breaker].Store, and a circuit breaker that trips in
// one process opens that host's (or route's) breaker in all of them, until
// the same moment, so the fleet does not rediscover an outage process by
// process. Each process still half-opens and probes on its own when the
// opening ends; a probe that fails opens the breaker again, fleet-wide.
//
// An opening is a Redis key per breaker that expires when the opening
// ends, holding the failure's text, and a notice on a pub/sub channel. A
// goroutine of the store keeps every opening it hears of in memory, where
// [BreakerStore.OpenUntil] reads it without a round trip; the first time
// a process asks about a key it reads the key from Redis, so a process
// that starts during an outage learns of it too. Durations, not instants,
// cross the wire: the processes' clocks need not agree.
//
// When Redis does not answer, each process's breakers are its own: an
// opening is kept locally, and nothing fails because Redis is down.
//
// BreakerStore is safe for concurrent use. The zero value is not usable;
// call [NewBreakerStore], and [BreakerStore.Close] once the engines using
// it are closed.
type BreakerStore struct {
	rdb redis.UniversalClient
	id  string // this process's id: it ignores its own notices
	pfx string // the fleet's key prefix

	mu     sync.Mutex                   // protects opens and looked
	opens  map[engine.LimitKey]opening  // openings in force, by this process's clock
	looked map[engine.LimitKey]struct{} // keys read from Redis once already

	stop chan struct{} // closed by Close
	done chan struct{} // closed when the listener has returned
	once sync.Once
}

type opening struct {
	until time.Time
	cause string
}

var _ engine.BreakerStore = (*BreakerStore)(nil)

// NewBreakerStore returns the breaker store of the named fleet (see
// [CheckName]) on rdb. It starts one goroutine, the listener, and waits
// briefly for its subscription. The caller keeps ownership of rdb, and
// closes the store before it.
func NewBreakerStore(rdb redis.UniversalClient, name string) (*BreakerStore, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	s := &BreakerStore{
		rdb: rdb, id: newOwner(), pfx: keyPrefix(name),
		opens: map[engine.LimitKey]opening{}, looked: map[engine.LimitKey]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultReadTimeout)
	ps := rdb.Subscribe(ctx, s.pfx+"breakers")
	ps.Receive(ctx) // wait for the subscription if Redis answers
	cancel()
	go func() {
		defer close(s.done)
		s.listen(ps)
	}()
	return s, nil
}

// Close stops the store's listener and waits for it. It is idempotent and
// does not close the Redis client.
func (s *BreakerStore) Close() error {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
	})
	return nil
}

// breakerNotice is what the breakers channel carries.
type breakerNotice struct {
	From  string `json:"f"`
	Host  string `json:"h"`
	Route string `json:"r,omitempty"`
	MS    int64  `json:"ms"` // how long the opening lasts from when it was published
	Cause string `json:"c,omitempty"`
}

// openScript opens a breaker for ARGV[1] milliseconds, unless it is
// already open longer, and announces it.
//
// KEYS[1] the breaker's key; ARGV[1] milliseconds, ARGV[2] the cause,
// ARGV[3] the breakers channel, ARGV[4] the notice
var openScript = redis.NewScript(`
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 0
`)

// readScript answers a breaker's remaining milliseconds (negative when it
// is not open) and its cause.
var readScript = redis.NewScript(`
return {redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1]) or ''}
`)

func (s *BreakerStore) key(k engine.LimitKey) string { return s.pfx + "breaker:" + k.String() }

// Open implements [engine.BreakerStore]: it keeps the opening in memory,
// writes it to Redis (unless a longer one is there) and announces it.
// While Redis is down it keeps it for this process only.
func (s *BreakerStore) Open(key engine.LimitKey, until time.Time, cause string) {
	d := time.Until(until)
	if d <= 0 || !s.openLocally(key, until, cause) {
		return
	}
	ms := max(d.Milliseconds(), 1)
	notice, _ := json.Marshal(breakerNotice{From: s.id, Host: key.Host, Route: key.Route, MS: ms, Cause: cause})
	ctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
	defer cancel()
	_ = openScript.Run(ctx, s.rdb, []string{s.key(key)}, strconv.FormatInt(ms, 10), cause, s.pfx+"breakers", string(notice)).Err()
}

// OpenUntil implements [engine.BreakerStore] from memory: the openings
// this process published or heard of. The first call for a key reads it
// from Redis.
func (s *BreakerStore) OpenUntil(key engine.LimitKey) (time.Time, string) {
	s.mu.Lock()
	_, looked := s.looked[key]
	s.looked[key] = struct{}{}
	s.mu.Unlock()
	if !looked {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultReadTimeout)
		vs, err := readScript.Run(ctx, s.rdb, []string{s.key(key)}).Slice()
		cancel()
		if err == nil && len(vs) == 2 {
			ms, _ := vs[0].(int64)
			cause, _ := vs[1].(string)
			if ms > 0 {
				s.openLocally(key, time.Now().Add(time.Duration(ms)*time.Millisecond), cause)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.opens[key]
	if !o.until.After(time.Now()) {
		return time.Time{}, ""
	}
	return o.until, o.cause
}

// openLocally extends key's opening in memory to until, and reports
// whether it did (false: a longer one was already known).
func (s *BreakerStore) openLocally(key engine.LimitKey, until time.Time, cause string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for k, o := range s.opens { // few breakers are open at once
		if !o.until.After(now) {
			delete(s.opens, k)
		}
	}
	if !until.After(s.opens[key].until) {
		return false
	}
	s.opens[key] = opening{until: until, cause: cause}
	return true
}

// listen is the store's goroutine, stopped by Close: it keeps the
// openings that other processes publish.
func (s *BreakerStore) listen(ps *redis.PubSub) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		<-s.stop
		cancel()
		ps.Close() // ends a Receive in progress
	})
	defer wg.Wait()
	for {
		msg, err := ps.Receive(ctx)
		select {
		case <-s.stop:
			return
		default:
		}
		if err != nil {
			// go-redis reconnects and subscribes again on the next
			// receive; do not spin while Redis is away.
			select {
			case <-s.stop:
				return
			case <-time.After(jitter(50*time.Millisecond, 200*time.Millisecond)):
			}
			continue
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		var n breakerNotice
		if json.Unmarshal([]byte(m.Payload), &n) != nil || n.From == s.id || n.Host == "" || n.MS <= 0 {
			continue
		}
		s.openLocally(engine.LimitKey{Host: n.Host, Route: n.Route}, time.Now().Add(time.Duration(n.MS)*time.Millisecond), n.Cause)
	}
}
