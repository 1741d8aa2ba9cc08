package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
)

// failingStore is a file store whose writes fail while fail is set.
type failingStore struct {
	engine.TokenStore
	fail *bool
}

func (f failingStore) CompareAndSwap(ctx context.Context, gen uint64, t engine.Tokens) (engine.StoredTokens, bool, error) {
	if *f.fail {
		return engine.StoredTokens{}, false, errors.New("disk full")
	}
	return f.TokenStore.CompareAndSwap(ctx, gen, t)
}

func (f failingStore) Lock(ctx context.Context, lease time.Duration) (engine.TokenLock, error) {
	l, err := f.TokenStore.Lock(ctx, lease)
	if err != nil {
		return nil, err
	}
	return failingLock{l, f.fail}, nil
}

type failingLock struct {
	engine.TokenLock
	fail *bool
}

func (l failingLock) Commit(ctx context.Context, gen uint64, t engine.Tokens) (engine.StoredTokens, bool, error) {
	if *l.fail {
		l.Unlock(ctx)
		return engine.StoredTokens{}, false, errors.New("disk full")
	}
	return l.TokenLock.Commit(ctx, gen, t)
}

// TestFailedTokenSaveIsLoudAndFailsTheRun pins a bug: when rotated tokens
// could not be written to --token-file, fetch printed a warning and exited
// 0, though the refresh token left in the file was dead. Each failure is
// said once on stderr, naming the file, a later success says so, and a run
// that ends with the file lacking the latest tokens exits 1.
func TestFailedTokenSaveIsLoudAndFailsTheRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	fs, err := engine.NewFileStore(path)
	require.NoError(t, err)
	fail := true
	var stderr strings.Builder
	s := newSavingStore(failingStore{fs, &fail}, path, fs.LockPath(), time.Second, &stderr)
	ctx := context.Background()

	l, err := s.Lock(ctx, time.Minute)
	require.NoError(t, err)
	_, _, err = l.Commit(ctx, 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
	require.Error(t, err)
	_, _, err = s.CompareAndSwap(ctx, 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
	require.Error(t, err)
	assert.Equal(t, 1, strings.Count(stderr.String(), "saving rotated tokens to --token-file "+path+": disk full"), "each failure is said once")
	assert.NotContains(t, stderr.String(), "r1", "never a token")
	assert.Equal(t, exitFailed, s.finish(exitOK), "the file lacks the latest tokens")
	assert.Equal(t, exitExpired, s.finish(exitExpired), "a higher status is kept")
	assert.Contains(t, stderr.String(), "the latest tokens are NOT saved in --token-file "+path)

	fail = false
	_, ok, err := s.CompareAndSwap(ctx, 0, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
	require.NoError(t, err)
	require.True(t, ok)
	assert.Contains(t, stderr.String(), "rotated tokens saved to --token-file "+path)
	assert.Equal(t, exitOK, s.finish(exitOK))
	assert.Equal(t, exitOK, (*savingStore)(nil).finish(exitOK), "without --token-file there is nothing to check")
}
