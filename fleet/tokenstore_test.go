package fleet_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
	"github.com/courier-go/courier/internal/storetest"
)

// client opens a client on srv that the test closes.
func client(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	c, err := fleet.NewClient(srv.URL())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

var fleetSeq atomic.Int64

// newStore opens a handle on the fleet's store with a client of its own,
// as a process of the fleet would.
func newStore(t *testing.T, srv *redistest.Server, name string, opts fleet.StoreOptions) *fleet.TokenStore {
	t.Helper()
	s, err := fleet.NewTokenStore(client(t, srv), name, opts)
	require.NoError(t, err)
	return s
}

func TestTokenStoreContract(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		name := fmt.Sprintf("contract-%d", fleetSeq.Add(1))
		return func() engine.TokenStore {
			return newStore(t, srv, name, fleet.StoreOptions{})
		}
	}, storetest.Options{LeaseLapses: true, Notifies: true})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTokenStoreKeepsTokensAndGenerationInOneKey(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	s := newStore(t, srv, "one-key", fleet.StoreOptions{})
	_, ok, err := s.CompareAndSwap(ctxT(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
	require.NoError(t, err)
	require.True(t, ok)
	keys, err := client(t, srv).Keys(ctxT(t), "*").Result()
	require.NoError(t, err)
	assert.Equal(t, []string{"courier:{one-key}:tokens"}, keys)
	h, err := client(t, srv).HGetAll(ctxT(t), keys[0]).Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"gen": "1", "at": "a1", "rt": "r1", "exp": "0"}, h)
}

func TestTokenStoreSurvivesARedisRestartWithPersistence(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	s := newStore(t, srv, "restart", fleet.StoreOptions{})
	exp := time.Now().Add(time.Hour).Round(time.Microsecond)
	_, ok, err := s.CompareAndSwap(ctxT(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1", Expiry: exp})
	require.NoError(t, err)
	require.True(t, ok)
	srv.Kill()
	srv.Restart()
	v, err := s.Load(ctxT(t))
	require.NoError(t, err, "the same client reconnects")
	assert.EqualValues(t, 1, v.Generation)
	assert.Equal(t, "r1", v.RefreshToken)
	assert.True(t, exp.Equal(v.Expiry))
}

func TestTokenStoreLockFailsClearlyWhileRedisIsDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	s := newStore(t, srv, "down", fleet.StoreOptions{Outage: 50 * time.Millisecond})
	srv.Stop()
	_, err := s.Lock(ctxT(t), time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, fleet.ErrUnavailable)
	assert.Contains(t, err.Error(), "refresh lock")
	_, err = s.Load(ctxT(t))
	assert.ErrorIs(t, err, fleet.ErrUnavailable, "a load waits out the outage bound, then fails")
}

// TestTokenStoreLockWaitsOutAShortOutage pins that a Lock that finds Redis
// down keeps trying and takes the lock once Redis is back. Redis comes
// back only after the Lock has seen it fail, so the outage is one the
// Lock waited out, not one that ended before it began.
func TestTokenStoreLockWaitsOutAShortOutage(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := client(t, srv)
	failures := make(chan error, 1)
	rdb.AddHook(failureHook{seen: failures})
	s, err := fleet.NewTokenStore(rdb, "short-outage", fleet.StoreOptions{Outage: time.Minute})
	require.NoError(t, err)
	srv.Stop()
	got := make(chan error, 1)
	go func() {
		l, err := s.Lock(ctxT(t), time.Second)
		if err == nil {
			err = l.Unlock(ctxT(t))
		}
		got <- err
	}()
	select {
	case err := <-failures:
		require.Error(t, err, "the Lock reached a Redis that was down")
	case err := <-got:
		t.Fatalf("Lock returned (%v) without seeing Redis down", err)
	}
	srv.Restart()
	assert.NoError(t, <-got, "the Lock waited out the outage and took the lock")
}

// failureHook sends the first error a command gets (without blocking
// on the later ones).
type failureHook struct{ seen chan<- error }

func (h failureHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h failureHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && err != redis.Nil {
			select {
			case h.seen <- err:
			default:
			}
		}
		return err
	}
}

func (h failureHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestTokenStoreCommitOfADeadHolderWritesNothingStale(t *testing.T) {
	// A holder whose lease lapsed and whose generation was overtaken
	// writes nothing and does not release the new holder's lock.
	srv := redistest.Start(t, redistest.Options{})
	a := newStore(t, srv, "stale", fleet.StoreOptions{})
	b := newStore(t, srv, "stale", fleet.StoreOptions{})
	_, _, err := a.CompareAndSwap(ctxT(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
	require.NoError(t, err)
	la, err := a.Lock(ctxT(t), 10*time.Millisecond)
	require.NoError(t, err)
	lb, err := b.Lock(ctxT(t), time.Minute)
	require.NoError(t, err)
	cur, ok, err := lb.Commit(ctxT(t), 1, engine.Tokens{AccessToken: "a2", RefreshToken: "r2"})
	require.NoError(t, err)
	require.True(t, ok)
	lb2, err := b.Lock(ctxT(t), time.Minute)
	require.NoError(t, err)
	cur, ok, err = la.Commit(ctxT(t), 1, engine.Tokens{AccessToken: "late", RefreshToken: "late"})
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, "r2", cur.RefreshToken)
	assert.NoError(t, lb2.Renew(ctxT(t), time.Minute), "the late commit left the new holder's lock alone")
	require.NoError(t, lb2.Unlock(ctxT(t)))
}

func TestTokenStoreWatchHearsAWriteMissedByPubSub(t *testing.T) {
	// A generation written while the watcher's connection was down (here:
	// written behind pub/sub's back) is found by the backstop poll.
	srv := redistest.Start(t, redistest.Options{})
	s := newStore(t, srv, "poll", fleet.StoreOptions{WatchPoll: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	ch := s.Watch(ctx)
	require.NoError(t, client(t, srv).HSet(ctxT(t), "courier:{poll}:tokens", "gen", "7", "at", "a", "rt", "r", "exp", "0").Err())
	assert.EqualValues(t, 7, <-ch)
	cancel()
	for range ch {
	}
}

func TestTokenStoreErrorsCarryNoTokens(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	s := newStore(t, srv, "corrupt", fleet.StoreOptions{})
	require.NoError(t, client(t, srv).HSet(ctxT(t), "courier:{corrupt}:tokens", "gen", "1", "at", "secret-at", "rt", "secret-rt", "exp", "secret-exp").Err())
	_, err := s.Load(ctxT(t))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "secret")
	assert.Contains(t, err.Error(), "expiry")
}

func TestNewTokenStoreRejectsBadNames(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	for _, name := range []string{"", "a b", "x{y}", string(make([]byte, 65))} {
		_, err := fleet.NewTokenStore(client(t, srv), name, fleet.StoreOptions{})
		assert.Error(t, err, "%q", name)
	}
}

// aclClient makes an ACL user with rules on srv and opens a client as it.
func aclClient(t *testing.T, srv *redistest.Server, user string, rules ...string) *redis.Client {
	t.Helper()
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">pw-" + user}
	for _, r := range rules {
		args = append(args, r)
	}
	require.NoError(t, client(t, srv).Do(ctxT(t), args...).Err())
	c, err := fleet.NewClient("unix://" + user + ":pw-" + user + "@" + srv.Socket())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// A user that may write keys but not PUBLISH used to store the new
// generation and tokens, then fail at the PUBLISH that announces them:
// the fleet held tokens its writer believed it had not stored.
func TestTokenStoreScriptsRefusedHalfwayWriteNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	admin := client(t, srv)
	nopub := aclClient(t, srv, "nopub", "~*", "&*", "+@all", "-publish")
	s, err := fleet.NewTokenStore(nopub, "acl", fleet.StoreOptions{})
	require.NoError(t, err)

	_, ok, err := s.CompareAndSwap(ctxT(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
	require.Error(t, err)
	assert.False(t, ok)
	assert.Contains(t, err.Error(), "NOPERM")
	assert.Contains(t, err.Error(), "PUBLISH")
	n, err := admin.Exists(ctxT(t), "courier:{acl}:tokens").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the refused compare-and-swap wrote no tokens")

	// Commit and Unlock: the lock stays its owner's when the release
	// notice is refused, rather than vanishing unannounced.
	l, err := s.Lock(ctxT(t), time.Minute)
	require.NoError(t, err)
	require.Error(t, l.Unlock(ctxT(t)))
	owner, err := admin.Get(ctxT(t), "courier:{acl}:lock").Result()
	require.NoError(t, err, "the refused unlock left the lock in place")
	assert.NotEmpty(t, owner)
	n, err = admin.Exists(ctxT(t), "courier:{acl}:tokens").Result()
	require.NoError(t, err)
	assert.Zero(t, n)
}
