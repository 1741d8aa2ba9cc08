package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pageLine is an output line of fetch --paginate.
type pageLine struct {
	Line   int             `json:"line"`
	ID     json.RawMessage `json:"id"`
	Page   int             `json:"page"`
	Path   string          `json:"path"`
	Status int             `json:"status"`
	Cache  string          `json:"cache"`
	Body   json.RawMessage `json:"body"`
	Error  *string         `json:"error"`
}

func parsePages(t *testing.T, s string) []pageLine {
	t.Helper()
	var out []pageLine
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var l pageLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "output line %q", sc.Text())
		out = append(out, l)
	}
	return out
}

// pagedAPI serves /COLLECTION?page=N with Link headers: collection "cN"
// has N pages; with last set, the first page also links rel="last".
type pagedAPI struct {
	*httptest.Server
	last     bool
	mu       sync.Mutex
	fetched  map[string]int // path?query to times answered
	requests atomic.Int64
	onReq    atomic.Pointer[func(n int64)]
}

func startPagedAPI(t *testing.T, last bool) *pagedAPI {
	a := &pagedAPI{last: last, fetched: map[string]int{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := a.requests.Add(1)
		if f := a.onReq.Load(); f != nil {
			(*f)(n)
		}
		pages, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/c"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		p, _ := strconv.Atoi(r.URL.Query().Get("page"))
		p = max(p, 1)
		a.mu.Lock()
		a.fetched[r.URL.RequestURI()]++
		a.mu.Unlock()
		if p < pages {
			link := fmt.Sprintf(`<%s?page=%d>; rel="next"`, r.URL.Path, p+1)
			if a.last {
				link += fmt.Sprintf(`, <%s?page=%d>; rel="last"`, r.URL.Path, pages)
			}
			w.Header().Set("Link", link)
		}
		fmt.Fprintf(w, `{"collection":%q,"page":%d}`, r.URL.Path, p)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *pagedAPI) refetched() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, k := range a.fetched {
		n += k - 1
	}
	return n
}

func TestFetchPaginateWritesEveryPageInOrder(t *testing.T) {
	api := startPagedAPI(t, false)
	in := "/c3\n# comment\n{\"id\":\"x\",\"path\":\"/c1\"}\n/c2\n"
	r := courier(t, in, nil, "fetch", "--base-url", api.URL, "--paginate", "link", "--concurrency", "4")
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
	}, seen)
	assert.JSONEq(t, `"x"`, string(got[3].ID), "the input line's id on its pages")
	assert.JSONEq(t, `{"collection":"/c3","page":2}`, string(got[1].Body))
}

func TestFetchPaginateMaxPages(t *testing.T) {
	api := startPagedAPI(t, true)
	r := courier(t, "/c50\n/c2\n", nil, "fetch", "--base-url", api.URL, "--paginate", "link", "--max-pages", "3")
	require.Equal(t, 0, r.code, r.stderr)
	got := parsePages(t, r.stdout)
	require.Len(t, got, 5)
	assert.Equal(t, []int{1, 2, 3, 1, 2}, []int{got[0].Page, got[1].Page, got[2].Page, got[3].Page, got[4].Page})
	assert.EqualValues(t, 5, api.requests.Load(), "nothing fetched past --max-pages")
}

func TestFetchPaginateUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--paginate", "pages"}, `--paginate "pages": want link, cursor:FIELD=PARAM`},
		{[]string{"--paginate", "cursor:next"}, "want cursor:FIELD=PARAM"},
		{[]string{"--paginate", "offset:o:0"}, "SIZE of at least 1"},
		{[]string{"--max-pages", "3"}, "--max-pages needs --paginate"},
		{[]string{"--paginate", "link", "--max-pages", "-1"}, "--max-pages must not be negative"},
		{[]string{"--paginate", "link", "--items", "data"}, "--items needs --paginate page or offset"},
		{[]string{"--cache", "redis"}, "--cache redis needs --redis"},
	} {
		r := courier(t, "/x\n", nil, append([]string{"fetch", "--base-url", "http://127.0.0.1:1"}, c.args...)...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", c.args, r.stderr)
		assert.Contains(t, r.stderr, c.want, "%v", c.args)
	}
}

func TestFetchPaginateCursorAndPages(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/feed":
			c, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
			next := `""`
			if c < 2 {
				next = strconv.Quote(strconv.Itoa(c + 1))
			}
			fmt.Fprintf(w, `{"meta":{"next":%s},"q":%q}`, next, r.URL.Query().Get("q"))
		case "/list":
			p, _ := strconv.Atoi(r.URL.Query().Get("p"))
			if p > 3 {
				fmt.Fprint(w, `{"data":[]}`)
				return
			}
			fmt.Fprintf(w, `{"data":[%d]}`, p)
		}
	}))
	t.Cleanup(srv.Close)
	r := courier(t, "/feed?q=go\n", nil, "fetch", "--base-url", srv.URL, "--paginate", "cursor:meta.next=cursor")
	require.Equal(t, 0, r.code, r.stderr)
	got := parsePages(t, r.stdout)
	require.Len(t, got, 3)
	for _, l := range got {
		assert.Contains(t, string(l.Body), `"q":"go"`, "the other parameters stay on every page")
	}
	r = courier(t, "/list?p=1\n", nil, "fetch", "--base-url", srv.URL, "--paginate", "page:p", "--items", "data")
	require.Equal(t, 0, r.code, r.stderr)
	got = parsePages(t, r.stdout)
	assert.GreaterOrEqual(t, len(got), 3)
	assert.LessOrEqual(t, len(got), 4)
}

// TestFetchCacheSecondPassCostsNoQuota runs fetch --cache twice over 1,000
// unchanged URLs against a server that, like GitHub's API, counts only
// the answers it sends in full against the quota.
func TestFetchCacheSecondPassCostsNoQuota(t *testing.T) {
	const n = 1000
	var full, notModified atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		etag := `"` + r.URL.Path + `"`
		w.Header().Set("Etag", etag)
		w.Header().Set("Cache-Control", "private, max-age=0")
		if r.Header.Get("If-None-Match") == etag {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		full.Add(1)
		fmt.Fprintf(w, `{"item":%q}`, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "/items/%d\n", i)
	}
	cache := filepath.Join(t.TempDir(), "cache")
	args := []string{"fetch", "--base-url", srv.URL, "--cache", cache}
	first := courier(t, in.String(), nil, args...)
	require.Equal(t, 0, first.code, first.stderr)
	require.EqualValues(t, n, full.Load())
	second := courier(t, in.String(), nil, args...)
	require.Equal(t, 0, second.code, second.stderr)
	a, b := parsePages(t, first.stdout), parsePages(t, second.stdout)
	require.Len(t, b, n)
	for i := range a {
		assert.Empty(t, a[i].Cache, "a miss says nothing")
		assert.Equal(t, "revalidated", b[i].Cache)
		assert.Equal(t, string(a[i].Body), string(b[i].Body))
	}
	t.Logf("second pass over %d unchanged URLs: %d quota-counted answers, %d answered 304", n, full.Load()-n, notModified.Load())
	assert.EqualValues(t, n, full.Load(), "the second pass costs no quota-counted answer")
	assert.Contains(t, second.stderr, "revalidated 1000")
}

// TestFetchPaginateResumeAfterKill9 kills a crawl mid-pagination and
// resumes it: every page is written once, in order, and at most
// --concurrency pages are fetched twice.
func TestFetchPaginateResumeAfterKill9(t *testing.T) {
	const pages, concurrency = 400, 8
	api := startPagedAPI(t, true)
	dir := t.TempDir()
	inPath, out := filepath.Join(dir, "in.txt"), filepath.Join(dir, "out.jsonl")
	require.NoError(t, os.WriteFile(inPath, []byte("/c3\n/c"+strconv.Itoa(pages)+"\n/c2\n"), 0o600))
	args := []string{"fetch", "--base-url", api.URL, "--paginate", "link", "--resume", "--out", out,
		"--concurrency", strconv.Itoa(concurrency), inPath}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, courierBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	require.NoError(t, cmd.Start())
	kill := func(n int64) {
		if n == 150 {
			_ = cmd.Process.Kill()
		}
	}
	api.onReq.Store(&kill)
	require.Error(t, cmd.Wait(), "the first run was killed")
	api.onReq.Store(nil)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	written := bytes.Count(data, []byte("\n"))
	t.Logf("killed at request 150 with %d pages written", written)
	require.Less(t, written, pages, "the kill came mid-pagination")

	r := courier(t, "", nil, args...)
	require.Equal(t, 0, r.code, r.stderr)
	data, err = os.ReadFile(out)
	require.NoError(t, err)
	got := parsePages(t, string(data))
	require.Len(t, got, 3+pages+2)
	for i, l := range got {
		require.Nil(t, l.Error, "line %d", i)
		switch {
		case i < 3:
			assert.Equal(t, [2]int{1, i + 1}, [2]int{l.Line, l.Page})
		case i < 3+pages:
			assert.Equal(t, [2]int{2, i - 2}, [2]int{l.Line, l.Page}, "pages of line 2 in order, once each")
		default:
			assert.Equal(t, [2]int{3, i - 2 - pages}, [2]int{l.Line, l.Page})
		}
	}
	t.Logf("pages fetched twice after kill -9: %d (--concurrency %d)", api.refetched(), concurrency)
	assert.LessOrEqual(t, api.refetched(), concurrency, "at most --concurrency pages fetched again")
	assert.Contains(t, r.stderr, fmt.Sprintf("kept        %d pages answered before", written))
}
