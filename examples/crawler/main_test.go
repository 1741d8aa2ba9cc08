package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
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
	// The second crawl: 10 pages and 200 item fetches, each either merged
	// into its twin in flight or revalidated, and every page and distinct
	// item revalidated at least once. Whether a twin finds the first still
	// in flight is timing: one finished already is revalidated again.
	m := regexp.MustCompile(`crawled again: (\d+) answers revalidated \(304\), (\d+) fetches merged`).FindStringSubmatch(out.String())
	require.NotNil(t, m, out.String())
	revalidated, _ := strconv.Atoi(m[1])
	merged, _ := strconv.Atoi(m[2])
	assert.Equal(t, 210, revalidated+merged, "every fetch of the second crawl merged or revalidated")
	assert.GreaterOrEqual(t, revalidated, 110, "every page and distinct item revalidated")
}
