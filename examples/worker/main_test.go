package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWorkerStopsCleanlyOnLogout(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, 120))
	assert.Contains(t, out.String(), "created 60 items, 60 jobs stopped by logout, 0 other failures, session ended 1 time(s), 1 refreshes")
}
