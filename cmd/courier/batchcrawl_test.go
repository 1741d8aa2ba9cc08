package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/redistest"
)

// withoutDurations drops each output line's duration_ms, the one field
// two runs of the same crawl write differently.
func withoutDurations(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "output line %q", l)
		delete(m, "duration_ms")
		lines = append(lines, m)
	}
	return lines
}

func TestFetchBatchPaginateCollectsEveryPageInOrder(t *testing.T) {
	api := startPagedAPI(t, false)
	rds := redistest.Start(t, redistest.Options{})
	dir := t.TempDir()
	in := "/c3\n# comment\n{\"id\":\"x\",\"path\":\"/c1\"}\n/c2\n/c9\n"
	inPath := filepath.Join(dir, "in.txt")
	require.NoError(t, os.WriteFile(inPath, []byte(in), 0o600))
	r := courier(t, "", nil, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "b",
		"--paginate", "link", "--max-pages", "5", "--concurrency", "4", inPath)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "done        4\n", "a line of many pages is one line done")

	r = courier(t, "", nil, "collect", "--redis", rds.URL(), "--batch", "b")
	require.Equal(t, 0, r.code, r.stderr)
	got := parsePages(t, r.stdout)
	type want struct {
		line, page int
		path       string
	}
	var seen []want
	for _, l := range got {
		seen = append(seen, want{l.Line, l.Page, l.Path})
		assert.Nil(t, l.Error)
	}
	assert.Equal(t, []want{
		{1, 1, "/c3"}, {1, 2, "/c3?page=2"}, {1, 3, "/c3?page=3"},
		{3, 1, "/c1"},
		{4, 1, "/c2"}, {4, 2, "/c2?page=2"},
		{5, 1, "/c9"}, {5, 2, "/c9?page=2"}, {5, 3, "/c9?page=3"}, {5, 4, "/c9?page=4"}, {5, 5, "/c9?page=5"},
	}, seen)
	assert.JSONEq(t, `"x"`, string(got[3].ID), "the input line's id on its pages")
	assert.JSONEq(t, `{"collection":"/c3","page":2}`, string(got[1].Body))

	// Line for line what a local crawl writes to its checkpoint.
	out := filepath.Join(dir, "local.jsonl")
	l := courier(t, "", nil, "fetch", "--base-url", api.URL, "--paginate", "link", "--max-pages", "5",
		"--resume", "--out", out, inPath)
	require.Equal(t, 0, l.code, l.stderr)
	local, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, withoutDurations(t, string(local)), withoutDurations(t, r.stdout))

	r = courier(t, "", nil, "batch", "status", "--redis", rds.URL(), "b")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "lines       4\ndone        4\nfailed      0\npending     0\nin flight   0\n")
}

func TestFetchBatchPaginateWorkerKilledMidLine(t *testing.T) {
	// A worker is killed (SIGKILL) on page 61 of line 2's 200; another
	// worker takes the line over once its lease lapses and carries on
	// from the pages stored: only the page in flight at the kill is
	// fetched twice.
	const pages = 200
	api := startPagedAPI(t, false)
	rds := redistest.Start(t, redistest.Options{})
	inPath := filepath.Join(t.TempDir(), "in.txt")
	require.NoError(t, os.WriteFile(inPath, []byte(fmt.Sprintf("/c3\n/c%d\n/c2\n", pages)), 0o600))
	worker := []string{"fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "b",
		"--paginate", "link", "--concurrency", "1", "--lease", "500ms"}

	first := startBackground(t, nil, append(worker, inPath)...)
	// Killed as the server takes a request after line 2's 60th page
	// (the worker holds two lines, and takes them in either order).
	kill := func(int64) {
		api.mu.Lock()
		defer api.mu.Unlock()
		n := 0
		for k := range api.fetched {
			if strings.HasPrefix(k, fmt.Sprintf("/c%d", pages)) {
				n++
			}
		}
		if n >= 60 {
			_ = first.cmd.Process.Kill()
		}
	}
	api.onReq.Store(&kill)
	assert.True(t, first.killed(), "the first worker was killed mid-line: %s", first.stderr.String())
	api.onReq.Store(nil)

	r := courier(t, "", nil, "batch", "status", "--redis", rds.URL(), "b")
	require.Equal(t, 0, r.code, r.stderr)
	assert.NotContains(t, r.stdout, "pending     0\n", "line 2 is not done")

	second := startBackground(t, nil, worker...)
	require.Equal(t, 0, second.wait(), second.stderr.String())
	assert.NotContains(t, second.stderr.String(), "took over 0 lines")

	r = courier(t, "", nil, "collect", "--redis", rds.URL(), "--batch", "b")
	require.Equal(t, 0, r.code, r.stderr)
	got := parsePages(t, r.stdout)
	require.Len(t, got, 3+pages+2)
	for i, l := range got {
		require.Nil(t, l.Error, "output line %d", i)
		switch {
		case i < 3:
			assert.Equal(t, [2]int{1, i + 1}, [2]int{l.Line, l.Page})
		case i < 3+pages:
			assert.Equal(t, [2]int{2, i - 2}, [2]int{l.Line, l.Page}, "pages of line 2 in order, once each")
		default:
			assert.Equal(t, [2]int{3, i - 2 - pages}, [2]int{l.Line, l.Page})
		}
	}
	api.mu.Lock()
	for page, n := range api.fetched {
		assert.LessOrEqual(t, n, 2, "page %s", page)
	}
	api.mu.Unlock()
	t.Logf("pages fetched twice after kill -9: %d", api.refetched())
	assert.LessOrEqual(t, api.refetched(), 1, "only the page in flight when the worker died is fetched again")

	r = courier(t, "", nil, "batch", "status", "--redis", rds.URL(), "b")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "lines       3\ndone        3\nfailed      0\npending     0\nin flight   0\n")
}
