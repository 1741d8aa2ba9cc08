//go:build unix

package upload_test

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/upload"
)

// TestFIFOIsRefusedWithoutWaitingForAWriter pins a bug: Build opened each
// file before checking it was a regular one, and opening a FIFO waits for
// a writer, so Build blocked forever.
func TestFIFOIsRefusedWithoutWaitingForAWriter(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pipe")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	var u upload.Builder
	_, err := u.File("f", fifo).Build()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"`+fifo+`": not a regular file`)
}
