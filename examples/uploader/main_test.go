package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUploaderSendsEverythingAfterARefresh(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, nil))
	assert.Contains(t, out.String(), "uploaded in 2 attempts (1 refresh)")
	assert.Equal(t, 2, strings.Count(out.String(), "(checksum matches)"))
}

func TestUploaderNamesAMissingFile(t *testing.T) {
	err := run(context.Background(), &bytes.Buffer{}, []string{"/no/such/photo.jpg"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"/no/such/photo.jpg"`)
}
