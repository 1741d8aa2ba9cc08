// Package storetest holds every engine.TokenStore to the same contract:
// the memory store, the file store and the Redis store run this suite.
package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
)

// Opener opens a handle on one backing store. Handles opened by the same
// Opener share tokens, generation, lock and notices, as two processes using
// one file or one Redis key do.
type Opener func() engine.TokenStore

// Options says what a store can do beyond the common contract.
type Options struct {
	// LeaseLapses is true when a lock's lease can lapse while its holder
	// lives (memory, Redis); false when the lock lasts as long as its
	// holder (flock).
	LeaseLapses bool
	// Notifies is true when Watch returns a channel, not nil.
	Notifies bool
}

// Run runs the contract's tests. fresh returns an Opener on a new, empty
// backing store each time it is called; it registers its own cleanup on t.
func Run(t *testing.T, fresh func(t *testing.T) Opener, opts Options) {
	t.Run("EmptyStoreIsGenerationZero", func(t *testing.T) {
		s := fresh(t)()
		v, err := s.Load(ctx(t))
		require.NoError(t, err)
		assert.Equal(t, engine.StoredTokens{}, v)
	})

	t.Run("CompareAndSwapSeedsAndBumpsTheGeneration", func(t *testing.T) {
		open := fresh(t)
		a, b := open(), open()
		exp := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
		cur, ok, err := a.CompareAndSwap(ctx(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1", Expiry: exp})
		require.NoError(t, err)
		require.True(t, ok, "an empty store is seeded without the lock")
		assert.EqualValues(t, 1, cur.Generation)
		got, err := b.Load(ctx(t))
		require.NoError(t, err)
		assertTokens(t, engine.Tokens{AccessToken: "a1", RefreshToken: "r1", Expiry: exp}, got.Tokens)
		assert.EqualValues(t, 1, got.Generation, "another handle sees the write")

		cur, ok, err = b.CompareAndSwap(ctx(t), 1, engine.Tokens{AccessToken: "a2", RefreshToken: "r2"})
		require.NoError(t, err)
		require.True(t, ok)
		assert.EqualValues(t, 2, cur.Generation)
		assert.True(t, cur.Expiry.IsZero(), "an unknown expiry stays unknown")
	})

	t.Run("CompareAndSwapOnAStaleGenerationReturnsTheCurrentValue", func(t *testing.T) {
		open := fresh(t)
		a, b := open(), open()
		_, ok, err := a.CompareAndSwap(ctx(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
		require.NoError(t, err)
		require.True(t, ok)
		cur, ok, err := b.CompareAndSwap(ctx(t), 0, engine.Tokens{AccessToken: "other", RefreshToken: "other"})
		require.NoError(t, err, "a conflict is not an error")
		assert.False(t, ok)
		assert.EqualValues(t, 1, cur.Generation)
		assert.Equal(t, "r1", cur.RefreshToken, "the caller can adopt the current value")
		got, err := a.Load(ctx(t))
		require.NoError(t, err)
		assert.Equal(t, "r1", got.RefreshToken, "nothing was written")
	})

	t.Run("ConcurrentCompareAndSwapHasOneWinner", func(t *testing.T) {
		open := fresh(t)
		const n = 8
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			s := open()
			wg.Go(func() {
				_, ok, err := s.CompareAndSwap(ctx(t), 0, engine.Tokens{AccessToken: fmt.Sprint("a", i)})
				assert.NoError(t, err)
				if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		assert.EqualValues(t, 1, wins.Load())
		v, err := open().Load(ctx(t))
		require.NoError(t, err)
		assert.EqualValues(t, 1, v.Generation)
	})

	t.Run("LockIsExclusiveAcrossHandlesAndItsWaitHonoursTheContext", func(t *testing.T) {
		open := fresh(t)
		a, b := open(), open()
		la, err := a.Lock(ctx(t), time.Minute)
		require.NoError(t, err)
		short, cancel := context.WithTimeout(ctx(t), 20*time.Millisecond)
		defer cancel()
		lb, err := b.Lock(short, time.Minute)
		require.Error(t, err, "the lock is held")
		assert.Nil(t, lb)
		assert.ErrorIs(t, err, context.DeadlineExceeded)

		got := make(chan engine.TokenLock)
		go func() {
			l, err := b.Lock(ctx(t), time.Minute)
			assert.NoError(t, err)
			got <- l
		}()
		require.NoError(t, la.Unlock(ctx(t)))
		require.NoError(t, la.Unlock(ctx(t)), "Unlock is idempotent")
		lb = <-got
		require.NotNil(t, lb, "a waiter gets the lock once it is released")
		assert.ErrorIs(t, la.Renew(ctx(t), time.Minute), errors.ErrLockLost, "a released handle is spent")
		require.NoError(t, lb.Unlock(ctx(t)))
	})

	t.Run("CommitWritesAndReleasesInOneStep", func(t *testing.T) {
		open := fresh(t)
		a, b := open(), open()
		var watch <-chan uint64
		if opts.Notifies {
			wctx, cancel := context.WithCancel(ctx(t))
			defer cancel()
			watch = b.Watch(wctx)
			require.NotNil(t, watch)
		}
		l, err := a.Lock(ctx(t), time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Renew(ctx(t), time.Minute))
		cur, ok, err := l.Commit(ctx(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
		require.NoError(t, err)
		require.True(t, ok)
		assert.EqualValues(t, 1, cur.Generation)
		lb, err := b.Lock(ctx(t), time.Minute)
		require.NoError(t, err, "Commit released the lock")
		v, err := b.Load(ctx(t))
		require.NoError(t, err)
		assert.Equal(t, "r1", v.RefreshToken)
		if watch != nil {
			assert.GreaterOrEqual(t, <-watch, uint64(1), "watchers hear of the commit")
		}
		_, _, err = l.Commit(ctx(t), 1, engine.Tokens{AccessToken: "x"})
		assert.ErrorIs(t, err, errors.ErrLockLost, "a committed handle is spent")

		// A commit on a stale generation writes nothing but still releases.
		cur, ok, err = lb.Commit(ctx(t), 0, engine.Tokens{AccessToken: "stale"})
		require.NoError(t, err)
		assert.False(t, ok)
		assert.Equal(t, "r1", cur.RefreshToken)
		lc, err := a.Lock(ctx(t), time.Minute)
		require.NoError(t, err, "a stale commit released the lock")
		require.NoError(t, lc.Unlock(ctx(t)))
	})

	t.Run("OneRefreshPerGenerationAmongManyHandles", func(t *testing.T) {
		// The engine's protocol: lock, read again, adopt a newer generation
		// or refresh and commit. However the handles interleave, each
		// generation is refreshed once and no refresh token is used twice.
		open := fresh(t)
		_, ok, err := open().CompareAndSwap(ctx(t), 0, engine.Tokens{AccessToken: "a0", RefreshToken: "r0"})
		require.NoError(t, err)
		require.True(t, ok)
		const handles, rounds = 4, 25
		var mu sync.Mutex
		used := map[string]int{}
		var wg sync.WaitGroup
		for h := range handles {
			s := open()
			wg.Go(func() {
				seen := uint64(0)
				for r := 0; r < rounds; r++ {
					v, err := s.Load(ctx(t))
					if !assert.NoError(t, err) {
						return
					}
					if v.Generation > seen && seen != 0 {
						seen = v.Generation // adopt
						continue
					}
					seen = v.Generation
					l, err := s.Lock(ctx(t), time.Minute)
					if !assert.NoError(t, err) {
						return
					}
					v, err = s.Load(ctx(t))
					if !assert.NoError(t, err) {
						return
					}
					if v.Generation > seen {
						seen = v.Generation
						assert.NoError(t, l.Unlock(ctx(t)))
						continue
					}
					mu.Lock()
					used[v.RefreshToken]++
					mu.Unlock()
					next := engine.Tokens{AccessToken: fmt.Sprintf("a-%d-%d", h, r), RefreshToken: fmt.Sprintf("r-%d-%d", h, r)}
					cur, ok, err := l.Commit(ctx(t), v.Generation, next)
					if !assert.NoError(t, err) || !assert.True(t, ok, "the holder's commit cannot conflict") {
						return
					}
					seen = cur.Generation
				}
			})
		}
		wg.Wait()
		v, err := open().Load(ctx(t))
		require.NoError(t, err)
		assert.EqualValues(t, len(used)+1, v.Generation, "one generation per refresh")
		for rt, n := range used {
			assert.Equal(t, 1, n, "refresh token %s used %d times", rt, n)
		}
	})

	if opts.LeaseLapses {
		t.Run("ALapsedLeaseLetsAnotherHolderInAndTheLateCommitStillLands", func(t *testing.T) {
			open := fresh(t)
			a, b := open(), open()
			la, err := a.Lock(ctx(t), 20*time.Millisecond)
			require.NoError(t, err)
			lb, err := b.Lock(ctx(t), time.Minute)
			require.NoError(t, err, "the lease lapsed")
			assert.ErrorIs(t, la.Renew(ctx(t), time.Minute), errors.ErrLockLost)
			cur, ok, err := la.Commit(ctx(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
			require.NoError(t, err)
			assert.True(t, ok, "issued tokens are written while the generation matches")
			assert.EqualValues(t, 1, cur.Generation)
			short, cancel := context.WithTimeout(ctx(t), 20*time.Millisecond)
			defer cancel()
			_, err = open().Lock(short, time.Minute)
			assert.ErrorIs(t, err, context.DeadlineExceeded, "the late commit did not release the new holder's lock")
			require.NoError(t, lb.Unlock(ctx(t)))
		})

		t.Run("RenewKeepsTheLock", func(t *testing.T) {
			open := fresh(t)
			a, b := open(), open()
			// Retry with a longer first lease if the machine stalled past it.
			for lease := 50 * time.Millisecond; ; lease *= 2 {
				la, err := a.Lock(ctx(t), lease)
				require.NoError(t, err)
				err = la.Renew(ctx(t), time.Minute)
				if errors.Is(err, errors.ErrLockLost) && lease < 5*time.Second {
					continue
				}
				require.NoError(t, err)
				short, cancel := context.WithTimeout(ctx(t), lease+50*time.Millisecond)
				_, err = b.Lock(short, time.Minute)
				cancel()
				assert.ErrorIs(t, err, context.DeadlineExceeded, "the renewed lease outlives the first one")
				require.NoError(t, la.Unlock(ctx(t)))
				return
			}
		})
	}

	if opts.Notifies {
		t.Run("WatchHearsOtherHandlesAndClosesWithItsContext", func(t *testing.T) {
			open := fresh(t)
			a, b := open(), open()
			wctx, cancel := context.WithCancel(ctx(t))
			ch := b.Watch(wctx)
			require.NotNil(t, ch)
			for gen := uint64(0); gen < 3; gen++ {
				_, ok, err := a.CompareAndSwap(ctx(t), gen, engine.Tokens{AccessToken: fmt.Sprint("a", gen)})
				require.NoError(t, err)
				require.True(t, ok)
			}
			// Notices may coalesce, but the newest generation arrives.
			for g := uint64(0); g < 3; {
				g = <-ch
			}
			cancel()
			for range ch {
			}
		})
	} else {
		t.Run("WatchReturnsNilWhenTheStoreCannotNotify", func(t *testing.T) {
			assert.Nil(t, fresh(t)().Watch(ctx(t)))
		})
	}

	t.Run("AWriteCheckWritesNothing", func(t *testing.T) {
		open := fresh(t)
		s := open()
		_, ok, err := s.CompareAndSwap(ctx(t), 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
		require.NoError(t, err)
		require.True(t, ok)
		l, err := s.Lock(ctx(t), time.Minute)
		require.NoError(t, err)
		wc, ok := l.(engine.WriteChecker)
		if !ok {
			require.NoError(t, l.Unlock(ctx(t)))
			t.Skip("the store's lock cannot check a write in advance")
		}
		require.NoError(t, wc.CheckWrite(ctx(t)), "a healthy store can write")
		v, err := open().Load(ctx(t))
		require.NoError(t, err)
		assert.EqualValues(t, 1, v.Generation, "the check wrote nothing")
		assert.Equal(t, "r1", v.RefreshToken)
		cur, ok, err := l.Commit(ctx(t), 1, engine.Tokens{AccessToken: "a2", RefreshToken: "r2"})
		require.NoError(t, err)
		assert.True(t, ok, "the lock is still held and usable after the check")
		assert.EqualValues(t, 2, cur.Generation)
	})

	t.Run("CancelledContextsFail", func(t *testing.T) {
		s := fresh(t)()
		c, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := s.Load(c)
		assert.ErrorIs(t, err, context.Canceled)
		_, _, err = s.CompareAndSwap(c, 0, engine.Tokens{AccessToken: "a"})
		assert.ErrorIs(t, err, context.Canceled)
		v, err := s.Load(ctx(t))
		require.NoError(t, err)
		assert.EqualValues(t, 0, v.Generation, "a cancelled write wrote nothing")
	})
}

// ctx bounds a step of the suite so a broken store fails instead of
// hanging.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func assertTokens(t *testing.T, want, got engine.Tokens) {
	t.Helper()
	assert.Equal(t, want.AccessToken, got.AccessToken)
	assert.Equal(t, want.RefreshToken, got.RefreshToken)
	assert.True(t, want.Expiry.Equal(got.Expiry), "expiry %v, want %v", got.Expiry, want.Expiry)
}
