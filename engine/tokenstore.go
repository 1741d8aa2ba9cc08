package engine

import (
	"context"
	"sync"
	"time"

	"github.com/courier-go/courier/errors"
)

// StoredTokens is what a [TokenStore] holds: a session's tokens and the
// generation they were written as. It is a plain value; the zero value is
// what the empty store holds.
//
// Generation counts the writes to the store: 0 is the empty store, which
// has never been written, and every successful compare-and-swap stores the
// next generation. A store never goes back to an older generation, so of
// two values read from one store, the one with the higher generation is the
// newer.
type StoredTokens struct {
	// Tokens are the session's credentials. A store keeps AccessToken,
	// RefreshToken and Expiry; the engine turns ExpiresIn into Expiry before
	// it writes, so a store need not keep ExpiresIn. Empty tokens at a
	// generation above 0 mean the session was ended (TerminateSession).
	Tokens
	// Generation of this value; 0 only for the empty store.
	Generation uint64
}

// TokenStore is the source of truth for a session's tokens, shared by every
// engine that uses the same store: engines in one process ([MemoryStore]),
// processes on one machine ([FileStore]) or a fleet (the Redis store of
// package fleet). Set it with [Auth.Store]; nil there means a
// [MemoryStore] of the engine's own.
//
// The engine uses it so that a rotating refresh token is sent exactly once
// by all of them together:
//
//   - It reads the store when it starts and again before every refresh. A
//     generation newer than its own is adopted instead of refreshing.
//   - It refreshes only while holding the store's refresh lock, after
//     reading the store again under the lock (someone may have refreshed
//     while it waited) and, when the lock is a [WriteChecker], after it
//     has proved the answer can be written. It waits for the lock at most
//     its lease plus Config.Timeout; past that, the requests waiting for
//     the refresh fail with ErrRefreshFailed, and the session goes on.
//   - It writes the answer with [TokenLock.Commit], a compare-and-swap on
//     the generation it read that also releases the lock, and only then
//     replays the requests that waited and reports success. A write that
//     fails is an error the waiting requests see.
//   - It listens with Watch (or polls Load) to learn of generations written
//     by others.
//
// Every method must be safe for concurrent use, by goroutines of one
// process and, for shared stores, by other processes. Every method that
// takes a context honours its cancellation and deadline: it returns the
// context's error (wrapped or not, matchable with errors.Is) when the
// context ends first. Errors other than the context's mean the store could
// not be read or written (I/O, network, a corrupt value); they must not
// contain token values.
type TokenStore interface {
	// Load returns the current tokens and generation. The empty store
	// returns the zero StoredTokens and no error.
	Load(ctx context.Context) (StoredTokens, error)

	// CompareAndSwap writes t as generation gen+1 if the store's current
	// generation is gen, and reports swapped true with the value now
	// stored. Otherwise it writes nothing and reports swapped false with
	// the store's current value, so the caller can adopt it without another
	// Load. A conflict is not an error; err is for failures to read or
	// write, after which the caller cannot know whether t was stored.
	//
	// CompareAndSwap needs no lock: it seeds an empty store (gen 0), and
	// the engine uses it for SetTokens. A refresh writes through
	// [TokenLock.Commit] instead.
	CompareAndSwap(ctx context.Context, gen uint64, t Tokens) (cur StoredTokens, swapped bool, err error)

	// Lock acquires the refresh lock, waiting until it is free or ctx
	// ends (then it returns ctx's error and holds nothing). At most one
	// holder at a time, across every handle on the same store, holds it.
	//
	// lease bounds how long the lock outlives a holder that stops
	// renewing it (a crashed or stalled process): once it lapses, another
	// caller may acquire the lock. The holder keeps it with
	// [TokenLock.Renew]. A store whose lock cannot outlive its holder
	// (an flock, which the kernel releases when the process dies) may
	// ignore lease.
	Lock(ctx context.Context, lease time.Duration) (TokenLock, error)

	// Watch returns a channel that receives a generation each time the
	// store learns of a write made after the call, by any handle, and is
	// closed once ctx has ended and the store has stopped watching. A
	// received value is a hint: the caller Loads to see the tokens, and a
	// value may arrive more than once or late. Sends never block the
	// store: the channel has room for one value, and a newer notice
	// replaces one not yet received.
	//
	// A store that cannot notify returns nil; the engine then polls Load.
	// The watching goroutines, if any, belong to the store and have
	// returned once the channel is closed.
	Watch(ctx context.Context) <-chan uint64
}

// TokenLock is a held refresh lock of a [TokenStore]. One goroutine uses
// it at a time. Once Commit or Unlock has returned, the handle is spent:
// further calls return [errors.ErrLockLost], or nil for Unlock.
type TokenLock interface {
	// Renew extends the lease to lease from now. It returns [errors.ErrLockLost]
	// (matchable with errors.Is) when the lease has already lapsed, even
	// if no one else has taken the lock since: the holder can no longer
	// assume it is alone. A holder that cannot renew should still Commit
	// what a refresh returned (below).
	Renew(ctx context.Context, lease time.Duration) error

	// Commit is CompareAndSwap followed by Unlock, in one step: no other
	// holder can take the lock between the write and the release, and
	// watchers are told of the new generation. It writes when the
	// store's generation is gen whether or not the lease is still held,
	// because tokens a server has issued replace the ones it rotated away
	// and losing them would lose the session; the generation check alone
	// keeps it from overwriting a newer value. It releases the lock only
	// if this holder still owns it, never another's. The lock is released
	// (or lapses) even when err is not nil.
	Commit(ctx context.Context, gen uint64, t Tokens) (cur StoredTokens, swapped bool, err error)

	// Unlock releases the lock without writing, if this holder still owns
	// it. It returns nil when the lease had already lapsed. It is safe to
	// call more than once.
	Unlock(ctx context.Context) error
}

// WriteChecker is implemented by a [TokenLock] whose store can find out,
// before a refresh, whether the refresh's answer could be written: a file
// store whose directory is read-only, full or gone. A refresh rotates the
// refresh token on the server, so an answer that cannot be stored loses
// the session; a check first costs one small write and spares that.
//
// The engine calls CheckWrite while it holds the lock, after it has read
// the store again and just before it sends the refresh. An error means no
// refresh is sent: the lock is released and the requests that waited fail
// with [errors.ErrRefreshFailed] wrapping the error, which should name
// what cannot be written (the directory, the file), never token values.
// The session goes on. Stores that cannot know in advance (memory, Redis)
// need not implement it. CheckWrite honours ctx like the other methods.
type WriteChecker interface {
	CheckWrite(ctx context.Context) error
}

// DefaultLockLease is the lease the engine asks for when it takes a
// store's refresh lock. It renews the lease every third of it while the
// refresh runs, so only a holder that stops (a crash, a stall) lets it
// lapse.
const DefaultLockLease = 15 * time.Second

// MemoryStore is a [TokenStore] in memory, shared by the engines of one
// process that use the same MemoryStore. It is what an engine uses when
// [Auth.Store] is nil.
//
// The zero value is an empty store, ready to use. MemoryStore is safe for
// concurrent use by multiple goroutines. Its lock's lease is measured in
// real time.
type MemoryStore struct {
	mu       sync.Mutex             // protects every field below
	val      StoredTokens           // the current value
	owner    uint64                 // the lock holder's id; 0 when free
	deadline time.Time              // when the holder's lease lapses
	nextID   uint64                 // last holder id handed out
	freed    chan struct{}          // closed and replaced when the lock is released; nil until needed
	watchers map[*memWatch]struct{} // live Watch channels
}

type memWatch struct{ ch chan uint64 }

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Load returns the current value. It never fails.
func (m *MemoryStore) Load(ctx context.Context) (StoredTokens, error) {
	if err := ctx.Err(); err != nil {
		return StoredTokens{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.val, nil
}

// CompareAndSwap implements [TokenStore].
func (m *MemoryStore) CompareAndSwap(ctx context.Context, gen uint64, t Tokens) (StoredTokens, bool, error) {
	if err := ctx.Err(); err != nil {
		return StoredTokens{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.swapLocked(gen, t)
}

// swapLocked is the compare-and-swap; m.mu must be held.
func (m *MemoryStore) swapLocked(gen uint64, t Tokens) (StoredTokens, bool, error) {
	if m.val.Generation != gen {
		return m.val, false, nil
	}
	t.ExpiresIn = 0
	m.val = StoredTokens{Tokens: t, Generation: gen + 1}
	for w := range m.watchers {
		select {
		case <-w.ch: // replace a notice not yet received
		default:
		}
		w.ch <- m.val.Generation
	}
	return m.val, true, nil
}

// Lock implements [TokenStore]. The lease lapses in real time.
func (m *MemoryStore) Lock(ctx context.Context, lease time.Duration) (TokenLock, error) {
	for {
		m.mu.Lock()
		now := time.Now()
		if m.owner == 0 || !now.Before(m.deadline) {
			m.nextID++
			m.owner, m.deadline = m.nextID, now.Add(lease)
			m.mu.Unlock()
			return &memLock{m: m, id: m.owner}, nil
		}
		if m.freed == nil {
			m.freed = make(chan struct{})
		}
		freed, wait := m.freed, m.deadline.Sub(now)
		m.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-freed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

// releaseLocked frees the lock if id holds it; m.mu must be held.
func (m *MemoryStore) releaseLocked(id uint64) {
	if m.owner != id {
		return
	}
	m.owner = 0
	if m.freed != nil {
		close(m.freed)
		m.freed = nil
	}
}

// Watch implements [TokenStore]: every successful write is announced at
// once.
func (m *MemoryStore) Watch(ctx context.Context) <-chan uint64 {
	w := &memWatch{ch: make(chan uint64, 1)}
	m.mu.Lock()
	if m.watchers == nil {
		m.watchers = make(map[*memWatch]struct{})
	}
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	context.AfterFunc(ctx, func() {
		m.mu.Lock()
		delete(m.watchers, w)
		close(w.ch) // under m.mu: no send can follow
		m.mu.Unlock()
	})
	return w.ch
}

// memLock is a held lock of a MemoryStore. One goroutine uses it at a
// time, as TokenLock says.
type memLock struct {
	m     *MemoryStore
	id    uint64
	spent bool // Commit or Unlock has run
}

func (l *memLock) Renew(ctx context.Context, lease time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if l.spent || m.owner != l.id || !now.Before(m.deadline) {
		return errors.ErrLockLost
	}
	m.deadline = now.Add(lease)
	return nil
}

func (l *memLock) Commit(ctx context.Context, gen uint64, t Tokens) (StoredTokens, bool, error) {
	if l.spent {
		return StoredTokens{}, false, errors.ErrLockLost
	}
	l.spent = true
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	// A cancelled ctx still releases the lock; it only stops the write.
	defer m.releaseLocked(l.id)
	if err := ctx.Err(); err != nil {
		return StoredTokens{}, false, err
	}
	return m.swapLocked(gen, t)
}

func (l *memLock) Unlock(context.Context) error {
	l.spent = true
	l.m.mu.Lock()
	l.m.releaseLocked(l.id)
	l.m.mu.Unlock()
	return nil
}
