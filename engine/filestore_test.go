package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
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
