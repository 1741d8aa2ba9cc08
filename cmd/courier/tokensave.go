package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/courier-go/courier/engine"
)

// savingStore is --token-file's store as fetch sees it: the file store,
// which alone writes the file, watched so that a failed write is loud. The
// server has usually retired the old refresh token once it rotates, so a
// token file that misses the new one is a dead session: a failed write is
// an error on stderr naming the file (the engine keeps the new tokens and
// writes them again before its next refresh, and when it stops), a later
// success says so, and if the file still lacks the latest tokens when the
// engine has closed, the exit status is 1 (3 or a signal's status is kept).
// savingStore is safe for concurrent use; a nil *savingStore is no store.
type savingStore struct {
	engine.TokenStore
	path     string        // --token-file as given
	lockPath string        // the lock file beside its target
	timeout  time.Duration // --timeout: with the lease, bounds a wait for the lock
	stderr   io.Writer

	mu      sync.Mutex // protects failing, lastErr and held
	failing bool       // the latest write of new tokens failed
	lastErr string     // the last failure reported, so each is said once
	held    int        // refresh locks taken and not yet committed or released: a refresh runs
}

func newSavingStore(s engine.TokenStore, path, lockPath string, timeout time.Duration, stderr io.Writer) *savingStore {
	return &savingStore{TokenStore: s, path: path, lockPath: lockPath, timeout: timeout, stderr: stderr}
}

// lockNotice is how long a wait for the refresh lock lasts before fetch
// says whose lock it waits for.
const lockNotice = time.Second

// CompareAndSwap writes through the file store and notes the outcome.
func (s *savingStore) CompareAndSwap(ctx context.Context, gen uint64, t engine.Tokens) (engine.StoredTokens, bool, error) {
	cur, ok, err := s.TokenStore.CompareAndSwap(ctx, gen, t)
	s.note(err)
	return cur, ok, err
}

// Lock takes the file store's lock; its Commit notes the outcome. While
// it is held a refresh runs (refreshing says so).
func (s *savingStore) Lock(ctx context.Context, lease time.Duration) (engine.TokenLock, error) {
	// Said once per wait, and only for one that lasts: another process
	// (a courier stopped with Ctrl-Z mid-refresh, say) holds the lock.
	notice := time.AfterFunc(lockNotice, func() {
		fmt.Fprintf(s.stderr, "courier fetch: waiting for the lock file %s of --token-file %s, held by another process (at most %s)\n",
			s.lockPath, s.path, lease+s.timeout)
	})
	l, err := s.TokenStore.Lock(ctx, lease)
	notice.Stop()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.held++
	s.mu.Unlock()
	return &savingLock{TokenLock: l, s: s}, nil
}

// refreshing reports whether a refresh holds the lock now: its answer is
// not stored yet.
func (s *savingStore) refreshing() bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held > 0
}

// savingLock is a held lock of the file store. One goroutine uses it at a
// time, as engine.TokenLock says.
type savingLock struct {
	engine.TokenLock
	s     *savingStore
	spent bool // Commit or Unlock has run: the lock no longer counts as held
}

// spend uncounts the lock, once.
func (l *savingLock) spend() {
	if l.spent {
		return
	}
	l.spent = true
	l.s.mu.Lock()
	l.s.held--
	l.s.mu.Unlock()
}

func (l *savingLock) Unlock(ctx context.Context) error {
	defer l.spend()
	return l.TokenLock.Unlock(ctx)
}

// CheckWrite is the file store's: before a refresh, the lock proves the
// token file's directory takes a new file.
func (l *savingLock) CheckWrite(ctx context.Context) error {
	if wc, ok := l.TokenLock.(engine.WriteChecker); ok {
		return wc.CheckWrite(ctx)
	}
	return nil
}

func (l *savingLock) Commit(ctx context.Context, gen uint64, t engine.Tokens) (engine.StoredTokens, bool, error) {
	defer l.spend()
	cur, ok, err := l.TokenLock.Commit(ctx, gen, t)
	l.s.note(err)
	return cur, ok, err
}

func (s *savingStore) note(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		if s.failing {
			fmt.Fprintf(s.stderr, "courier fetch: rotated tokens saved to --token-file %s\n", s.path)
		}
		s.failing, s.lastErr = false, ""
		return
	}
	s.failing = true
	if msg := err.Error(); msg != s.lastErr {
		s.lastErr = msg
		fmt.Fprintf(s.stderr, "courier fetch: saving rotated tokens to --token-file %s: %v (tried again before the next refresh and at the end)\n", s.path, err)
	}
}

// finish runs once the engine is closed (it has made its last write) and
// returns the exit status: exitFailed when the file does not hold the
// latest tokens, unless the status is already above it.
func (s *savingStore) finish(code int) int {
	if s == nil {
		return code
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.failing {
		return code
	}
	fmt.Fprintf(s.stderr, "courier fetch: the latest tokens are NOT saved in --token-file %s (%s); the refresh token it holds may no longer work\n", s.path, s.lastErr)
	return max(code, exitFailed)
}
