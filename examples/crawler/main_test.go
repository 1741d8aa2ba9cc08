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

func TestCrawlerMergesDuplicatesRefreshesAndRevalidates(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, 10))
	assert.Contains(t, out.String(), "crawled 10 pages, 200 item fetches")
	assert.Regexp(t, `\(\d+ merged\), [1-9]\d* token refreshes`, out.String())
	// 10 pages and 100 distinct items, each revalidated once.
	assert.Contains(t, out.String(), "crawled again: 110 answers revalidated (304)")
}
