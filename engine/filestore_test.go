package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/storetest"
)

func TestFileStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "tokens.json")
		return func() engine.TokenStore {
			// A new FileStore per handle: they share only the file, as
			// processes do.
			s, err := engine.NewFileStore(path)
			require.NoError(t, err)
			return s
		}
	}, storetest.Options{})
}

func TestFileStoreWritesOwnerOnlyFilesAndLeavesNoTemporaries(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"access_token":"a0","refresh_token":"r0"}`), 0o644))
	s, err := engine.NewFileStore(path)
	require.NoError(t, err)
	ctx := context.Background()
	v, err := s.Load(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 1, v.Generation, "a token file without a generation is generation 1")
	assert.Equal(t, "r0", v.RefreshToken)

	exp := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	_, ok, err := s.CompareAndSwap(ctx, 1, engine.Tokens{AccessToken: "a1", RefreshToken: "r1", Expiry: exp})
	require.NoError(t, err)
	require.True(t, ok)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the token file is readable by its owner only")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"tokens.json", "tokens.json.lock"}, names, "no temporary file is left behind")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.JSONEq(t, `{"access_token":"a1","refresh_token":"r1","expiry":"2031-05-06T07:08:09Z","generation":2}`, string(b))
}

func TestFileStoreErrorsNameTheFileNotTheTokens(t *testing.T) {
	for name, content := range map[string]string{
		"torn":      `{"access_token":"secret-at","refresh_tok`,
		"not a map": `["secret-at"]`,
		"bad type":  `{"access_token":"secret-at","refresh_token":42}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.json")
			require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
			s, err := engine.NewFileStore(path)
			require.NoError(t, err)
			_, err = s.Load(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), path)
			assert.NotContains(t, err.Error(), "secret")
		})
	}
	_, err := engine.NewFileStore("")
	assert.ErrorContains(t, err, "empty path")
}

func TestFileStoreMissingFileIsEmptyButAMissingDirectoryFailsTheWrite(t *testing.T) {
	s, err := engine.NewFileStore(filepath.Join(t.TempDir(), "none", "tokens.json"))
	require.NoError(t, err)
	v, err := s.Load(context.Background())
	require.NoError(t, err)
	assert.Zero(t, v.Generation)
	_, _, err = s.CompareAndSwap(context.Background(), 0, engine.Tokens{AccessToken: "a"})
	assert.ErrorContains(t, err, "token file lock")
}

// A symlinked token file used to be replaced by a regular file on the
// first write: the link's target kept the rotated-away refresh token, and
// a process using the target's path reused it. The store now writes
// beside the target and renames onto it; the link stays a link, and both
// paths share one session and one lock.
func TestFileStoreWritesThroughSymlinks(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// link makes the path the store is opened with, pointing (maybe
		// through several links) at real, which may not exist yet.
		link func(t *testing.T, real string) string
	}{
		{"absolute link", func(t *testing.T, real string) string {
			l := filepath.Join(t.TempDir(), "tokens.json")
			require.NoError(t, os.Symlink(real, l))
			return l
		}},
		{"relative chain", func(t *testing.T, real string) string {
			dir := t.TempDir()
			rel, err := filepath.Rel(dir, real)
			require.NoError(t, err)
			require.NoError(t, os.Symlink(rel, filepath.Join(dir, "hop")))
			l := filepath.Join(dir, "tokens.json")
			require.NoError(t, os.Symlink("hop", l))
			return l
		}},
	} {
		for _, dangling := range []bool{false, true} {
			name := tc.name
			if dangling {
				name += ", target not there yet"
			}
			t.Run(name, func(t *testing.T) {
				realDir := t.TempDir()
				real := filepath.Join(realDir, "real.json")
				gen := uint64(0)
				if !dangling {
					require.NoError(t, os.WriteFile(real, []byte(`{"access_token":"a0","refresh_token":"r0"}`), 0o600))
					gen = 1
				}
				link := tc.link(t, real)
				viaLink, err := engine.NewFileStore(link)
				require.NoError(t, err)
				viaReal, err := engine.NewFileStore(real)
				require.NoError(t, err)

				l, err := viaLink.Lock(ctx, time.Minute)
				require.NoError(t, err)
				short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				_, err = viaReal.Lock(short, time.Minute)
				cancel()
				require.ErrorIs(t, err, context.DeadlineExceeded, "the link's path and the target's share one lock")
				_, ok, err := l.Commit(ctx, gen, engine.Tokens{AccessToken: "a1", RefreshToken: "r1"})
				require.NoError(t, err)
				require.True(t, ok)

				fi, err := os.Lstat(link)
				require.NoError(t, err)
				assert.NotZero(t, fi.Mode()&os.ModeSymlink, "the link is still a link")
				v, err := viaReal.Load(ctx)
				require.NoError(t, err)
				assert.Equal(t, "r1", v.RefreshToken, "the target holds the new tokens")
				assert.Equal(t, gen+1, v.Generation)
				entries, err := os.ReadDir(realDir)
				require.NoError(t, err)
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				assert.ElementsMatch(t, []string{"real.json", "real.json.lock"}, names, "the lock and no temporary beside the target")
			})
		}
	}
}

// A token file in a directory that cannot be written used to let the
// refresh go out: the server rotated the token, the write failed, and the
// new token was lost. Under the lock the store now proves it can write
// first; when it cannot, no refresh is sent and the error names the
// directory.
func TestNoRefreshIsSentWhenTheTokenFileCannotBeWritten(t *testing.T) {
	for _, lockThere := range []bool{true, false} {
		name := "lock file there"
		if !lockThere {
			name = "no lock file"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "tokens.json")
			require.NoError(t, os.WriteFile(path, []byte(`{"access_token":"stale","refresh_token":"refresh-1"}`), 0o600))
			if lockThere {
				require.NoError(t, os.WriteFile(path+".lock", nil, 0o600))
			}
			storetest.ReadOnlyDir(t, dir)
			store, err := engine.NewFileStore(path)
			require.NoError(t, err)
			synctest.Test(t, func(t *testing.T) {
				api := newTokenAPI()
				cfg := tokenConfig(api)
				cfg.Auth = engine.Auth{Store: store, Refresh: cfg.Auth.Refresh}
				e := startEngine(t, cfg)
				_, err := e.Get(context.Background(), "/x")
				require.ErrorIs(t, err, errors.ErrRefreshFailed)
				assert.ErrorContains(t, err, dir, "the error names the directory")
				assert.NotErrorIs(t, err, errors.ErrSessionExpired, "the session goes on")
				assert.Zero(t, api.refreshCalls(), "no refresh was sent")
			})
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.JSONEq(t, `{"access_token":"stale","refresh_token":"refresh-1"}`, string(b))
		})
	}
}

func TestFileStoreReadsExpiresAt(t *testing.T) {
	for content, want := range map[string]time.Time{
		`{"access_token":"a","refresh_token":"r","expires_at":"2030-01-02T03:04:05Z"}`:            time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		`{"access_token":"a","refresh_token":"r","expires_at":1893553445}`:                        time.Unix(1893553445, 0),
		`{"access_token":"a","refresh_token":"r","expires_at":1,"expiry":"2031-01-01T00:00:00Z"}`: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC),
		`{"access_token":"a","refresh_token":"r","expires_at":null}`:                              {},
	} {
		path := filepath.Join(t.TempDir(), "tokens.json")
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		s, err := engine.NewFileStore(path)
		require.NoError(t, err)
		v, err := s.Load(context.Background())
		require.NoError(t, err, content)
		assert.True(t, want.Equal(v.Expiry), "%s: expiry %v, want %v", content, v.Expiry, want)
	}
	path := filepath.Join(t.TempDir(), "tokens.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"access_token":"a","expires_at":"tomorrow"}`), 0o600))
	s, err := engine.NewFileStore(path)
	require.NoError(t, err)
	_, err = s.Load(context.Background())
	assert.ErrorContains(t, err, "expires_at")
	assert.ErrorContains(t, err, path)
}

// A token file locked by another live process (a courier stopped with
// Ctrl-Z mid-refresh, any flock holder) used to stall the refresh with no
// bound. The wait is now bounded by the lock lease plus the request
// timeout and ends in an error naming the lock file; no refresh is sent.
func TestLockHeldByAnotherProcessBoundsTheWait(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"access_token":"stale","refresh_token":"refresh-1"}`), 0o600))
	storetest.HoldFlock(t, path+".lock")
	store, err := engine.NewFileStore(path)
	require.NoError(t, err)
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		cfg := tokenConfig(api)
		cfg.Timeout = 5 * time.Second
		cfg.Auth = engine.Auth{Store: store, Refresh: cfg.Auth.Refresh}
		e := startEngine(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // virtual: fails, not hangs, without a bound
		defer cancel()
		start := time.Now()
		_, err := e.Get(ctx, "/x")
		waited := time.Since(start)
		require.ErrorIs(t, err, errors.ErrRefreshFailed)
		assert.ErrorContains(t, err, path+".lock", "the error names the lock file")
		assert.ErrorContains(t, err, "held by another process")
		bound := engine.DefaultLockLease + cfg.Timeout
		assert.GreaterOrEqual(t, waited, bound, "the wait lasted the bound")
		assert.Less(t, waited, bound+time.Second, "and no longer")
		assert.Zero(t, api.refreshCalls(), "no refresh was sent")
	})
}
