package engine_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/storetest"
)

func TestMemoryStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		s := &engine.MemoryStore{} // the zero value is ready
		return func() engine.TokenStore { return s }
	}, storetest.Options{LeaseLapses: true, Notifies: true})
}

func TestMemoryStoreZeroValueIsAnEmptyStore(t *testing.T) {
	var s engine.MemoryStore
	got, err := s.Load(context.Background())
	require.NoError(t, err)
	assert.Zero(t, got.Generation, "the zero value has never been written")
	cur, swapped, err := s.CompareAndSwap(context.Background(), 0, engine.Tokens{AccessToken: "a", RefreshToken: "r"})
	require.NoError(t, err)
	assert.True(t, swapped, "an empty store is seeded without a lock")
	assert.Equal(t, uint64(1), cur.Generation)
	assert.Equal(t, "r", cur.RefreshToken)
}
