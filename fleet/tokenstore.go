package fleet

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
)

// StoreOptions tunes a [TokenStore]. The zero value gives the defaults. It
// is a plain value: [NewTokenStore] keeps a copy.
type StoreOptions struct {
	// WatchPoll is how often a Watch reads the generation as a backstop
	// for notices that pub/sub lost (while the connection was down). It is
	// jittered by up to a quarter either way. If zero,
	// [DefaultWatchPoll].
	WatchPoll time.Duration
	// LockPoll bounds how long a Lock waiter sleeps between attempts when
	// no release notice comes (a holder that died lets its lease lapse
	// without a notice). If zero, [DefaultLockPoll].
	LockPoll time.Duration
	// Outage bounds how long Lock and Commit keep trying while Redis does
	// not answer, before they fail with [ErrUnavailable]. If zero,
	// [DefaultOutage].
	Outage time.Duration
}

// Defaults of [StoreOptions].
const (
	DefaultWatchPoll = 2 * time.Second
	DefaultLockPoll  = 250 * time.Millisecond
	DefaultOutage    = 10 * time.Second
)

// ErrUnavailable matches errors for operations that Redis did not answer
// for longer than they may wait. See [UnavailableError].
var ErrUnavailable = errors.New("fleet: redis unavailable")

// UnavailableError reports that Redis did not answer an operation of the
// fleet for too long. It matches [ErrUnavailable] and wraps the last
// error from Redis (a network error; never a token or a password). It is a
// plain value, made by [TokenStore]; its fields are read-only.
type UnavailableError struct {
	Op  string        // what was tried, such as "refresh lock"
	For time.Duration // how long it was tried
	Err error         // the last error from Redis
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("fleet: %s: redis unavailable for %v: %v", e.Op, e.For.Round(time.Millisecond), e.Err)
}

// Unwrap returns the last error from Redis.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is matches [ErrUnavailable].
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// TokenStore is an [engine.TokenStore] in Redis, shared by every process
// of a fleet that names the same fleet on the same Redis.
//
// Keys, with P = "courier:{NAME}:":
//
//	P tokens   a hash: gen, at (access token), rt (refresh token), exp
//	           (expiry, Unix nanoseconds; 0 when unknown); one key, so
//	           tokens and their generation change together
//	P lock     the refresh lock: a random owner id, SET NX PX lease
//	P gen      pub/sub channel: each new generation, as it is written
//	P unlock   pub/sub channel: the lock was released
//
// Writes are Lua scripts: compare-and-swap on gen, and Commit also releases
// the lock if it still belongs to the committer and publishes the new
// generation, in one step. Watch learns of new generations by pub/sub and,
// as a backstop for notices lost while a connection was down, reads the
// generation every [StoreOptions.WatchPoll] (jittered).
//
// While Redis is unreachable, Load and CompareAndSwap fail at once; Lock
// and Commit keep trying for up to [StoreOptions.Outage] and then fail with
// [ErrUnavailable]. No lock, no refresh: a process cut off from Redis never
// sends a refresh token that the rest of the fleet may have rotated away.
// Keep the tokens through a Redis restart by running Redis with
// persistence (appendonly yes); a Redis that forgets them makes the store
// empty, and the next engine seeds it with the tokens it holds.
//
// TokenStore is safe for concurrent use. The zero value is not usable; call
// [NewTokenStore].
type TokenStore struct {
	rdb  redis.UniversalClient
	keys storeKeys
	opts StoreOptions
}

type storeKeys struct {
	tokens, lock, genChan, unlockChan string
}

// NewTokenStore returns the token store of the named fleet (see
// [CheckName]) on rdb. It does not contact Redis. The caller keeps
// ownership of rdb and closes it after the last use of the store.
func NewTokenStore(rdb redis.UniversalClient, name string, opts StoreOptions) (*TokenStore, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if opts.WatchPoll <= 0 {
		opts.WatchPoll = DefaultWatchPoll
	}
	if opts.LockPoll <= 0 {
		opts.LockPoll = DefaultLockPoll
	}
	if opts.Outage <= 0 {
		opts.Outage = DefaultOutage
	}
	p := keyPrefix(name)
	return &TokenStore{
		rdb:  rdb,
		keys: storeKeys{tokens: p + "tokens", lock: p + "lock", genChan: p + "gen", unlockChan: p + "unlock"},
		opts: opts,
	}, nil
}

var _ engine.TokenStore = (*TokenStore)(nil)

// casScript is the compare-and-swap on the generation, for CompareAndSwap
// (no owner) and Commit (an owner, whose lock it releases).
//
// KEYS[1] tokens, KEYS[2] lock
// ARGV[1] expected generation, ARGV[2] access token, ARGV[3] refresh token,
// ARGV[4] expiry, ARGV[5] owner or "", ARGV[6] gen channel,
// ARGV[7] unlock channel
//
// It answers {swapped, gen, at, rt, exp}: the value now stored. It checks
// every write first and writes nothing when one would be refused (see
// aclPrelude); the notice goes out before the write it announces, which
// its listeners read only once the script is over.
var casScript = redis.NewScript(aclPrelude + `
local no = denied({'HSET', KEYS[1], 'gen', '0', 'at', '0', 'rt', '0', 'exp', '0'},
  {'PUBLISH', ARGV[6], '0'}, {'GET', KEYS[2]}, {'DEL', KEYS[2]}, {'PUBLISH', ARGV[7], ''})
if no then return redis.error_reply(no) end
local cur = redis.call('HGET', KEYS[1], 'gen') or '0'
local swapped = 0
if cur == ARGV[1] then
  local gen = tonumber(cur) + 1
  redis.call('PUBLISH', ARGV[6], gen)
  redis.call('HSET', KEYS[1], 'gen', gen, 'at', ARGV[2], 'rt', ARGV[3], 'exp', ARGV[4])
  swapped = 1
end
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('PUBLISH', ARGV[7], '')
  redis.call('DEL', KEYS[2])
end
local v = redis.call('HMGET', KEYS[1], 'gen', 'at', 'rt', 'exp')
return {swapped, v[1] or '0', v[2] or '', v[3] or '', v[4] or '0'}
`)

// acquireScript takes the lock, or says how long its holder's lease has
// left: {1, 0} when taken, {0, pttl} when held.
//
// KEYS[1] lock; ARGV[1] owner, ARGV[2] lease in milliseconds
var acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
`)

// renewScript extends the lease if the owner still holds the lock.
//
// KEYS[1] lock; ARGV[1] owner, ARGV[2] lease in milliseconds
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// unlockScript releases the lock if the owner still holds it.
//
// KEYS[1] lock; ARGV[1] owner, ARGV[2] unlock channel
var unlockScript = redis.NewScript(aclPrelude + `
local no = denied({'PUBLISH', ARGV[2], ''}, {'DEL', KEYS[1]})
if no then return redis.error_reply(no) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PUBLISH', ARGV[2], '')
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`)

// Load implements [engine.TokenStore] with one HMGET. While Redis does
// not answer it keeps trying, for up to [StoreOptions.Outage] or until ctx
// ends, and then fails with [ErrUnavailable]: the engine reads the store
// before every refresh, and a request that needs one waits for Redis
// rather than failing at the first lost connection.
func (s *TokenStore) Load(ctx context.Context) (engine.StoredTokens, error) {
	var failing time.Time
	for {
		vals, err := s.rdb.HMGet(ctx, s.keys.tokens, "gen", "at", "rt", "exp").Result()
		if err == nil {
			return s.decode(vals)
		}
		if ctx.Err() != nil || !isConnError(err) {
			return engine.StoredTokens{}, s.wrap(ctx, "load tokens", err)
		}
		if failing.IsZero() {
			failing = time.Now()
		} else if d := time.Since(failing); d >= s.opts.Outage {
			return engine.StoredTokens{}, &UnavailableError{Op: "load tokens", For: d, Err: err}
		}
		if err := sleep(ctx, jitter(50*time.Millisecond, 200*time.Millisecond)); err != nil {
			return engine.StoredTokens{}, s.wrap(ctx, "load tokens", err)
		}
	}
}

func (s *TokenStore) decode(vals []any) (engine.StoredTokens, error) {
	str := func(v any) string {
		if v, ok := v.(string); ok {
			return v
		}
		return ""
	}
	return decodeTokens(str(vals[0]), str(vals[1]), str(vals[2]), str(vals[3]))
}

// decodeTokens builds a value from the stored fields. Its errors never
// quote a field, which could be a token.
func decodeTokens(gen, at, rt, exp string) (engine.StoredTokens, error) {
	var v engine.StoredTokens
	if gen == "" {
		gen = "0"
	}
	g, err := strconv.ParseUint(gen, 10, 64)
	if err != nil {
		return v, fmt.Errorf("fleet: stored token generation is not a number")
	}
	v.Generation, v.AccessToken, v.RefreshToken = g, at, rt
	if exp != "" && exp != "0" {
		ns, err := strconv.ParseInt(exp, 10, 64)
		if err != nil {
			return v, fmt.Errorf("fleet: stored token expiry is not a number")
		}
		v.Expiry = time.Unix(0, ns)
	}
	return v, nil
}

func encodeExpiry(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

// CompareAndSwap implements [engine.TokenStore] with one script call.
func (s *TokenStore) CompareAndSwap(ctx context.Context, gen uint64, t engine.Tokens) (engine.StoredTokens, bool, error) {
	if err := ctx.Err(); err != nil {
		return engine.StoredTokens{}, false, err
	}
	cur, ok, err := s.cas(ctx, gen, t, "")
	if err != nil {
		return cur, false, s.wrap(ctx, "store tokens", err)
	}
	return cur, ok, nil
}

func (s *TokenStore) cas(ctx context.Context, gen uint64, t engine.Tokens, owner string) (engine.StoredTokens, bool, error) {
	res, err := casScript.Run(ctx, s.rdb,
		[]string{s.keys.tokens, s.keys.lock},
		strconv.FormatUint(gen, 10), t.AccessToken, t.RefreshToken, encodeExpiry(t.Expiry),
		owner, s.keys.genChan, s.keys.unlockChan,
	).Slice()
	if err != nil {
		return engine.StoredTokens{}, false, err
	}
	if len(res) != 5 {
		return engine.StoredTokens{}, false, fmt.Errorf("fleet: store tokens: unexpected answer of %d values", len(res))
	}
	str := func(v any) string {
		switch v := v.(type) {
		case string:
			return v
		case int64:
			return strconv.FormatInt(v, 10)
		}
		return ""
	}
	swapped, _ := res[0].(int64)
	cur, err := decodeTokens(str(res[1]), str(res[2]), str(res[3]), str(res[4]))
	return cur, swapped == 1, err
}

// Lock implements [engine.TokenStore]. It takes the lock with SET NX PX
// and a random owner id; while another holds it, it waits for the release
// notice or the holder's lease to run out (whichever comes first, checked
// at least every [StoreOptions.LockPoll]). While Redis does not answer it
// keeps trying for up to [StoreOptions.Outage], then fails with
// [ErrUnavailable].
func (s *TokenStore) Lock(ctx context.Context, lease time.Duration) (engine.TokenLock, error) {
	if lease < time.Millisecond {
		lease = time.Millisecond
	}
	owner := newOwner()
	leaseMS := strconv.FormatInt(lease.Milliseconds(), 10)
	var (
		ps        *redis.PubSub // the release notices; subscribed once the lock was found held
		failing   time.Time     // when Redis stopped answering; zero while it answers
		lastErr   error
		subscribe = true
	)
	defer func() {
		if ps != nil {
			ps.Close()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res, err := acquireScript.Run(ctx, s.rdb, []string{s.keys.lock}, owner, leaseMS).Int64Slice()
		if err == nil && len(res) != 2 {
			err = fmt.Errorf("fleet: refresh lock: unexpected answer of %d values", len(res))
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			lastErr = err
			if failing.IsZero() {
				failing = time.Now()
			} else if d := time.Since(failing); d >= s.opts.Outage {
				return nil, &UnavailableError{Op: "refresh lock", For: d, Err: lastErr}
			}
			if err := sleep(ctx, jitter(50*time.Millisecond, 200*time.Millisecond)); err != nil {
				return nil, err
			}
			continue
		}
		failing = time.Time{}
		if res[0] == 1 {
			return &tokenLock{s: s, owner: owner}, nil
		}
		if subscribe {
			// Subscribe, then try again at once: a release between the
			// attempt and the subscription would otherwise go unheard.
			subscribe = false
			ps = s.rdb.Subscribe(ctx, s.keys.unlockChan)
			if _, err := ps.Receive(ctx); err != nil {
				ps.Close()
				ps = nil // poll only
			}
			continue
		}
		wait := s.opts.LockPoll
		if pttl := time.Duration(res[1]) * time.Millisecond; pttl > 0 && pttl < wait {
			wait = pttl + time.Millisecond
		}
		wait = jitter(wait/2, wait)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			wait = max(time.Until(dl), time.Millisecond)
		}
		if ps == nil {
			if err := sleep(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		// Any message on the channel is a release; an error or a timeout
		// means try again.
		if _, err := ps.ReceiveTimeout(ctx, wait); err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// tokenLock is a held lock of a TokenStore. One goroutine uses it at a
// time, as engine.TokenLock says.
type tokenLock struct {
	s     *TokenStore
	owner string
	spent bool // Commit or Unlock has run
}

// Renew implements [engine.TokenLock]: it extends the lease only if this
// owner still holds the lock.
func (l *tokenLock) Renew(ctx context.Context, lease time.Duration) error {
	if l.spent {
		return errors.ErrLockLost
	}
	if lease < time.Millisecond {
		lease = time.Millisecond
	}
	n, err := renewScript.Run(ctx, l.s.rdb, []string{l.s.keys.lock}, l.owner, strconv.FormatInt(lease.Milliseconds(), 10)).Int64()
	if err != nil {
		return l.s.wrap(ctx, "renew refresh lock", err)
	}
	if n != 1 {
		return errors.ErrLockLost
	}
	return nil
}

// Commit implements [engine.TokenLock]. A server's answer must not be
// lost, so while Redis does not answer Commit keeps trying, for up to
// [StoreOptions.Outage] or until ctx ends. A try whose answer was lost may
// have written: a later try that finds these very tokens stored as the
// next generation reports them as swapped.
func (l *tokenLock) Commit(ctx context.Context, gen uint64, t engine.Tokens) (engine.StoredTokens, bool, error) {
	if l.spent {
		return engine.StoredTokens{}, false, errors.ErrLockLost
	}
	l.spent = true
	if err := ctx.Err(); err != nil {
		l.unlockDetached()
		return engine.StoredTokens{}, false, err
	}
	var failing time.Time
	retried := false
	for {
		cur, ok, err := l.s.cas(ctx, gen, t, l.owner)
		if err == nil {
			if !ok && retried && cur.Generation == gen+1 &&
				cur.AccessToken == t.AccessToken && cur.RefreshToken == t.RefreshToken {
				ok = true // an earlier try wrote them
			}
			return cur, ok, nil
		}
		if ctx.Err() != nil || !isConnError(err) {
			l.unlockDetached()
			return engine.StoredTokens{}, false, l.s.wrap(ctx, "commit tokens", err)
		}
		retried = true
		if failing.IsZero() {
			failing = time.Now()
		} else if d := time.Since(failing); d >= l.s.opts.Outage {
			// The lease lapses on its own.
			return engine.StoredTokens{}, false, &UnavailableError{Op: "commit tokens", For: d, Err: err}
		}
		if err := sleep(ctx, jitter(50*time.Millisecond, 200*time.Millisecond)); err != nil {
			l.unlockDetached()
			return engine.StoredTokens{}, false, err
		}
	}
}

// Unlock implements [engine.TokenLock].
func (l *tokenLock) Unlock(ctx context.Context) error {
	if l.spent {
		return nil
	}
	l.spent = true
	if err := unlockScript.Run(ctx, l.s.rdb, []string{l.s.keys.lock}, l.owner, l.s.keys.unlockChan).Err(); err != nil {
		return l.s.wrap(ctx, "release refresh lock", err)
	}
	return nil
}

// unlockDetached releases the lock after ctx ended, on a short context of
// its own; if Redis does not answer, the lease lapses.
func (l *tokenLock) unlockDetached() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	unlockScript.Run(ctx, l.s.rdb, []string{l.s.keys.lock}, l.owner, l.s.keys.unlockChan)
}

// Watch implements [engine.TokenStore]: a goroutine, stopped by ctx,
// subscribes to the generation channel and reads the generation every
// [StoreOptions.WatchPoll] (jittered) in case a notice was lost. It sends
// only generations newer than the last it sent (or read when it started).
// The subscription is confirmed before Watch returns, when Redis answers.
func (s *TokenStore) Watch(ctx context.Context) <-chan uint64 {
	out := make(chan uint64, 1)
	ps := s.rdb.Subscribe(ctx, s.keys.genChan)
	// Wait (briefly) for the subscription, so writes after the return are
	// heard; if Redis is down the poll covers until it returns.
	rctx, cancel := context.WithTimeout(ctx, DefaultReadTimeout)
	ps.Receive(rctx)
	cancel()
	var last uint64
	if v, err := s.loadGen(ctx); err == nil {
		last = v
	}
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	go func() {
		defer close(out)
		defer stop()
		defer ps.Close()
		send := func(g uint64) {
			if g <= last {
				return
			}
			last = g
			select {
			case <-out: // replace a notice not yet received
			default:
			}
			out <- g
		}
		nextPoll := time.Now().Add(jitter(s.opts.WatchPoll*3/4, s.opts.WatchPoll*5/4))
		for ctx.Err() == nil {
			msg, err := ps.ReceiveTimeout(ctx, max(time.Until(nextPoll), time.Millisecond))
			if ctx.Err() != nil {
				return
			}
			if m, ok := msg.(*redis.Message); ok && err == nil {
				if g, err := strconv.ParseUint(m.Payload, 10, 64); err == nil {
					send(g)
				}
				continue
			}
			if err != nil && !isTimeout(err) {
				// The connection is down; go-redis reconnects and
				// subscribes again on the next receive. Poll meanwhile.
				if sleep(ctx, jitter(50*time.Millisecond, 200*time.Millisecond)) != nil {
					return
				}
			}
			if !time.Now().Before(nextPoll) {
				pctx, cancel := context.WithTimeout(ctx, DefaultReadTimeout)
				if g, err := s.loadGen(pctx); err == nil {
					send(g)
				}
				cancel()
				nextPoll = time.Now().Add(jitter(s.opts.WatchPoll*3/4, s.opts.WatchPoll*5/4))
			}
		}
	}()
	return out
}

func (s *TokenStore) loadGen(ctx context.Context) (uint64, error) {
	v, err := s.rdb.HGet(ctx, s.keys.tokens, "gen").Result()
	if err == redis.Nil {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(v, 10, 64)
}

// wrap gives a Redis error its context: the context's own error when ctx
// ended, else "fleet: op: err".
func (s *TokenStore) wrap(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("fleet: %s: %w", op, ctx.Err())
	}
	return fmt.Errorf("fleet: %s: %w", op, err)
}

// isConnError reports whether err says Redis could not be reached or did
// not answer, rather than that it answered with an error.
// A TLS failure is not one: a certificate no wait makes trusted is a
// configuration error (see [Unreachable]).
func isConnError(err error) bool {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		// An answer, such as LOADING while a restarted Redis reads its
		// append-only file: wait for it like for a dead connection.
		msg := rerr.Error()
		return len(msg) >= 7 && (msg[:7] == "LOADING" || msg[:7] == "BUSY Re")
	}
	return !isTLSError(err)
}

// isTLSError reports whether err is a TLS handshake's failure: a
// certificate that does not verify, an alert from the server (it refused
// the client's certificate, say), or a server that does not speak TLS.
func isTLSError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		record   tls.RecordHeaderError
		op       *net.OpError
	)
	// crypto/tls reports an alert the server sent as a *net.OpError
	// whose Op is "remote error".
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &alert) || errors.As(err, &record) ||
		(errors.As(err, &op) && op.Op == "remote error")
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func newOwner() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// jitter returns a duration uniformly in [lo, hi).
func jitter(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(mathrand.Int64N(int64(hi-lo)))
}

// sleep waits d or until ctx ends, and returns ctx's error if it ended.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
