package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/paginate"
	"github.com/courier-go/courier/requests"
)

// quotaAPI answers GET /items/N with a body that changes only when the
// test says so, an ETag, a Last-Modified and the Cache-Control the test
// sets, and answers conditional requests with 304. Like GitHub's API, it
// counts only the answers it sends in full against the quota.
type quotaAPI struct {
	*httptest.Server
	mu           sync.Mutex
	version      int
	cacheControl string
	vary         string
	noValidators bool
	extra        http.Header // added to every answer, 304s included
	full         atomic.Int64
	notModified  atomic.Int64
	conditional  atomic.Int64 // requests carrying If-None-Match or If-Modified-Since
	auth         []string     // Authorization of each request
	gate         chan struct{}
}

var lastModified = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newQuotaAPI(t *testing.T) *quotaAPI {
	a := &quotaAPI{version: 1, cacheControl: "no-cache"}
	a.Server = httptest.NewServer(a)
	t.Cleanup(a.Close)
	return a
}

func (a *quotaAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	v, cc, vary, noVal, gate := a.version, a.cacheControl, a.vary, a.noValidators, a.gate
	a.auth = append(a.auth, r.Header.Get("Authorization"))
	for k, vs := range a.extra {
		w.Header()[k] = vs
	}
	a.mu.Unlock()
	if gate != nil {
		<-gate
	}
	etag := fmt.Sprintf(`"v%d"`, v)
	if cc != "" {
		w.Header().Set("Cache-Control", cc)
	}
	if vary != "" {
		w.Header().Set("Vary", vary)
	}
	inm, ims := r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since")
	if inm != "" || ims != "" {
		a.conditional.Add(1)
	}
	if !noVal {
		w.Header().Set("Etag", etag)
		w.Header().Set("Last-Modified", lastModified.Format(http.TimeFormat))
		if inm == etag || (inm == "" && ims != "" && v == 1) {
			a.notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	a.full.Add(1)
	fmt.Fprintf(w, `{"path":%q,"version":%d}`, r.URL.Path, v)
}

func (a *quotaAPI) set(f func(a *quotaAPI)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func cget(t *testing.T, e *engine.Engine, path string, opts ...requests.Option) *requests.Response {
	t.Helper()
	resp, err := e.Get(ctxTimeout(t, 10*time.Second), path, opts...)
	require.NoError(t, err)
	return resp
}

func TestCacheRevalidatesAndServesTheStoredBodyOn304(t *testing.T) {
	api := newQuotaAPI(t)
	e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0)})

	first := cget(t, e, "/items/1")
	assert.Equal(t, requests.CacheMiss, first.Cache)
	api.set(func(a *quotaAPI) { a.extra = http.Header{"X-Served": {"again"}} })
	second := cget(t, e, "/items/1")
	assert.Equal(t, requests.CacheRevalidated, second.Cache)
	assert.Equal(t, 200, second.Status, "the stored status, not the 304")
	assert.Equal(t, string(first.Body), string(second.Body))
	assert.Equal(t, "again", second.Header.Get("X-Served"), "the 304's headers update the stored ones")
	assert.EqualValues(t, 1, api.full.Load(), "one answer counted against the quota")
	assert.EqualValues(t, 1, api.notModified.Load())

	// A changed resource is fetched in full, and replaces the entry.
	api.set(func(a *quotaAPI) { a.version = 2 })
	third := cget(t, e, "/items/1")
	assert.Equal(t, requests.CacheMiss, third.Cache)
	assert.Contains(t, string(third.Body), `"version":2`)
	s := e.Stats()
	assert.EqualValues(t, 1, s.CacheRevalidations)
	assert.Zero(t, s.CacheHits)
	assert.EqualValues(t, len(second.Body), s.CacheBytes)
}

func TestCacheServesFreshEntriesWithoutARequest(t *testing.T) {
	api := newQuotaAPI(t)
	api.cacheControl = "max-age=60"
	e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0)})
	first := cget(t, e, "/items/1")
	for range 3 {
		r := cget(t, e, "/items/1")
		assert.Equal(t, requests.CacheHit, r.Cache)
		assert.Equal(t, string(first.Body), string(r.Body))
		assert.Zero(t, r.Attempts, "nothing was sent")
	}
	assert.EqualValues(t, 1, api.full.Load()+api.notModified.Load(), "one request reached the server")
	assert.EqualValues(t, 3, e.Stats().CacheHits)
	assert.EqualValues(t, 3*len(first.Body), e.Stats().CacheBytes)

	// Cache-Control: no-cache in the request asks the server.
	r := cget(t, e, "/items/1", requests.WithHeader("Cache-Control", "no-cache"))
	assert.Equal(t, requests.CacheRevalidated, r.Cache)
	assert.EqualValues(t, 1, api.conditional.Load())
}

func TestCacheFreshnessFollowsTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var full, conditional atomic.Int64
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=10")
			w.Header().Set("Etag", `"x"`)
			w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
			if r.Header.Get("If-None-Match") == `"x"` {
				conditional.Add(1)
				w.WriteHeader(http.StatusNotModified)
				return
			}
			full.Add(1)
			fmt.Fprint(w, "body")
		})
		e, err := engine.New(engine.Config{BaseURL: "http://api.test", Cache: engine.NewMemoryCache(0), HTTPClient: &http.Client{Transport: inproc{h}}})
		require.NoError(t, err)
		defer e.Close()
		ctx := context.Background()
		status := func() requests.CacheStatus {
			r, err := e.Get(ctx, "/x")
			require.NoError(t, err)
			require.Equal(t, "body", string(r.Body))
			return r.Cache
		}
		assert.Equal(t, requests.CacheMiss, status())
		time.Sleep(9 * time.Second)
		assert.Equal(t, requests.CacheHit, status(), "fresh for max-age")
		time.Sleep(2 * time.Second)
		assert.Equal(t, requests.CacheRevalidated, status(), "stale after max-age: revalidated")
		time.Sleep(5 * time.Second)
		assert.Equal(t, requests.CacheHit, status(), "the 304 made it fresh again")
		assert.EqualValues(t, 1, full.Load())
		assert.EqualValues(t, 1, conditional.Load())
	})
}

func TestCacheAgeHeaderCountsAgainstFreshness(t *testing.T) {
	api := newQuotaAPI(t)
	api.cacheControl = "max-age=60"
	api.extra = http.Header{"Age": {"60"}}
	e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0)})
	cget(t, e, "/items/1")
	assert.Equal(t, requests.CacheRevalidated, cget(t, e, "/items/1").Cache, "an answer 60 s old with max-age=60 is stale")
}

func TestCacheUsesIfModifiedSinceWithoutAnETag(t *testing.T) {
	var ims atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", lastModified.Format(http.TimeFormat))
		if v := r.Header.Get("If-Modified-Since"); v != "" {
			ims.Store(v)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "old news")
	}))
	t.Cleanup(srv.Close)
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Cache: engine.NewMemoryCache(0)})
	cget(t, e, "/x")
	r := cget(t, e, "/x")
	assert.Equal(t, requests.CacheRevalidated, r.Cache, "Last-Modified alone gives no freshness: revalidated")
	assert.Equal(t, "old news", string(r.Body))
	assert.Equal(t, lastModified.Format(http.TimeFormat), ims.Load())
}

func TestCacheStoresNothingItMayNot(t *testing.T) {
	cases := map[string]func(a *quotaAPI){
		"no-store":              func(a *quotaAPI) { a.cacheControl = "no-store" },
		"no-store among others": func(a *quotaAPI) { a.cacheControl = `max-age=60, no-store` },
		"no validator, no freshness": func(a *quotaAPI) {
			a.cacheControl = ""
			a.noValidators = true
		},
		"vary star": func(a *quotaAPI) { a.vary = "*" },
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			api := newQuotaAPI(t)
			api.set(setup)
			cache := engine.NewMemoryCache(0)
			e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: cache})
			cget(t, e, "/items/1")
			r := cget(t, e, "/items/1")
			assert.Equal(t, requests.CacheMiss, r.Cache)
			assert.Zero(t, api.conditional.Load(), "nothing stored, nothing to revalidate")
			n, _ := cache.Len()
			assert.Zero(t, n)
		})
	}
	t.Run("request no-store", func(t *testing.T) {
		api := newQuotaAPI(t)
		cache := engine.NewMemoryCache(0)
		e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: cache})
		cget(t, e, "/items/1", requests.WithHeader("Cache-Control", "no-store"))
		n, _ := cache.Len()
		assert.Zero(t, n)
	})
}

func TestCacheHonoursVary(t *testing.T) {
	api := newQuotaAPI(t)
	api.cacheControl = "max-age=60"
	api.vary = "Accept-Language"
	cache := engine.NewMemoryCache(0)
	fr := newEngine(t, engine.Config{BaseURL: api.URL, Cache: cache, Headers: http.Header{"Accept-Language": {"fr"}}})
	de := newEngine(t, engine.Config{BaseURL: api.URL, Cache: cache, Headers: http.Header{"Accept-Language": {"de"}}})
	cget(t, fr, "/items/1")
	assert.Equal(t, requests.CacheHit, cget(t, fr, "/items/1").Cache)
	assert.Equal(t, requests.CacheMiss, cget(t, de, "/items/1").Cache, "another Accept-Language: not the stored variant")
	assert.Zero(t, api.conditional.Load(), "a variant that does not match is not revalidated either")
}

func TestCacheKeepsEntriesAcrossARefreshAndApartBetweenCallers(t *testing.T) {
	api := newQuotaAPI(t)
	api.cacheControl = "max-age=60"
	e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0), Auth: engine.Auth{AccessToken: "engine-1"}})
	cget(t, e, "/items/1")
	e.SetTokens(engine.Tokens{AccessToken: "engine-2"})
	assert.Equal(t, requests.CacheHit, cget(t, e, "/items/1").Cache, "a new engine token keeps the entry")

	alice := cget(t, e, "/items/1", requests.WithHeader("Authorization", "Bearer alice"))
	assert.Equal(t, requests.CacheMiss, alice.Cache, "a caller's own credentials never share the engine's entry")
	bob := cget(t, e, "/items/1", requests.WithHeader("Authorization", "Bearer bob"))
	assert.Equal(t, requests.CacheMiss, bob.Cache, "nor another caller's")
	assert.Equal(t, requests.CacheHit, cget(t, e, "/items/1", requests.WithHeader("Authorization", "Bearer alice")).Cache)
	assert.Zero(t, api.conditional.Load())
	api.mu.Lock()
	defer api.mu.Unlock()
	assert.Equal(t, []string{"Bearer engine-1", "Bearer alice", "Bearer bob"}, api.auth,
		"a caller-set Authorization replaces the engine's token")
}

func TestCacheRevalidatesOnceForIdenticalRequestsInFlight(t *testing.T) {
	api := newQuotaAPI(t)
	e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0)})
	body := cget(t, e, "/items/1").Body
	gate := make(chan struct{})
	api.set(func(a *quotaAPI) { a.gate = gate })
	ctx := ctxTimeout(t, 10*time.Second)
	var fs []*engine.Future
	for range 10 {
		fs = append(fs, e.Submit(ctx, requests.New("GET", "/items/1")))
	}
	require.Eventually(t, func() bool { return e.Stats().DedupHits == 9 }, 5*time.Second, time.Millisecond)
	close(gate)
	for _, f := range fs {
		r, err := f.Await(ctx)
		require.NoError(t, err)
		assert.Equal(t, requests.CacheRevalidated, r.Cache)
		assert.Equal(t, string(body), string(r.Body))
	}
	assert.EqualValues(t, 1, api.conditional.Load(), "one conditional request for all")
	assert.EqualValues(t, 1, api.full.Load())
}

func TestCacheRevalidatesEveryPageOfACrawl(t *testing.T) {
	var full, notModified atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := pageNumber(r)
		etag := fmt.Sprintf(`"p%d"`, n)
		w.Header().Set("Etag", etag)
		if n < 5 {
			w.Header().Set("Link", fmt.Sprintf(`<?page=%d>; rel="next"`, n+1))
		}
		if r.Header.Get("If-None-Match") == etag {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		full.Add(1)
		fmt.Fprintf(w, `{"page":%d}`, n)
	}))
	t.Cleanup(srv.Close)
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Cache: engine.NewMemoryCache(0)})
	crawl := func() (bodies []string, statuses []requests.CacheStatus) {
		for resp, err := range e.Pages(ctxTimeout(t, 10*time.Second), requests.New("GET", "/x"), paginate.Link()) {
			require.NoError(t, err)
			bodies = append(bodies, string(resp.Body))
			statuses = append(statuses, resp.Cache)
		}
		return bodies, statuses
	}
	b1, _ := crawl()
	b2, s2 := crawl()
	assert.Len(t, b1, 5)
	assert.Equal(t, b1, b2, "the second crawl follows the stored Link headers to the same pages")
	for _, s := range s2 {
		assert.Equal(t, requests.CacheRevalidated, s)
	}
	assert.EqualValues(t, 5, full.Load())
	assert.EqualValues(t, 5, notModified.Load())
}

func TestCacheUnsafeMethodInvalidatesTheEntry(t *testing.T) {
	api := newQuotaAPI(t)
	api.cacheControl = "max-age=60"
	e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0)})
	cget(t, e, "/items/1")
	assert.Equal(t, requests.CacheHit, cget(t, e, "/items/1").Cache)
	_, err := e.Put(ctxTimeout(t, 10*time.Second), "/items/1", requests.WithJSON(map[string]int{"a": 1}))
	require.NoError(t, err)
	assert.Equal(t, requests.CacheMiss, cget(t, e, "/items/1").Cache, "a successful PUT drops the stored GET")
}

func TestCacheHeadGetsNoBody(t *testing.T) {
	api := newQuotaAPI(t)
	api.cacheControl = "max-age=60"
	e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0)})
	ctx := ctxTimeout(t, 10*time.Second)
	_, err := e.Do(ctx, requests.New("HEAD", "/items/1"))
	require.NoError(t, err)
	r, err := e.Do(ctx, requests.New("HEAD", "/items/1"))
	require.NoError(t, err)
	assert.Equal(t, requests.CacheHit, r.Cache)
	assert.Empty(t, r.Body)
	assert.Equal(t, requests.CacheMiss, cget(t, e, "/items/1").Cache, "a HEAD's entry does not serve a GET")
}

func TestNoCacheLeavesResponseCacheEmpty(t *testing.T) {
	api := newQuotaAPI(t)
	e := newEngine(t, engine.Config{BaseURL: api.URL})
	assert.Equal(t, requests.CacheNone, cget(t, e, "/items/1").Cache)
	assert.Equal(t, requests.CacheNone, cget(t, e, "/items/1").Cache)
	assert.Zero(t, api.conditional.Load())
}

func TestMemoryCacheEvictsTheLeastRecentlyUsed(t *testing.T) {
	c := engine.NewMemoryCache(3 * 1200)
	ctx := context.Background()
	entry := func() *engine.CachedResponse { return &engine.CachedResponse{Status: 200, Body: make([]byte, 1000)} }
	key := func(i int) string { return fmt.Sprintf("%064x", i) }
	for i := range 3 {
		require.NoError(t, c.Set(ctx, key(i), entry()))
	}
	_, _ = c.Get(ctx, key(0)) // 0 used last: 1 is the oldest
	require.NoError(t, c.Set(ctx, key(3), entry()))
	for i, want := range []bool{true, false, true, true} {
		r, err := c.Get(ctx, key(i))
		require.NoError(t, err)
		assert.Equal(t, want, r != nil, "entry %d", i)
	}
	n, size := c.Len()
	assert.Equal(t, 3, n)
	assert.LessOrEqual(t, size, int64(3*1200))
	require.NoError(t, c.Set(ctx, key(9), &engine.CachedResponse{Body: make([]byte, 5000)}))
	r, _ := c.Get(ctx, key(9))
	assert.Nil(t, r, "an entry larger than the whole cache is not stored")
}

func TestFileCacheOutlivesTheEngine(t *testing.T) {
	api := newQuotaAPI(t)
	dir := filepath.Join(t.TempDir(), "cache")
	run := func() *requests.Response {
		c, err := engine.NewFileCache(dir, 0)
		require.NoError(t, err)
		e := newEngine(t, engine.Config{BaseURL: api.URL, Cache: c})
		return cget(t, e, "/items/1?token=secret")
	}
	first, second := run(), run()
	assert.Equal(t, requests.CacheMiss, first.Cache)
	assert.Equal(t, requests.CacheRevalidated, second.Cache)
	assert.Equal(t, string(first.Body), string(second.Body))
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, des, 1, "one file an entry, no temporary file left")
	assert.NotContains(t, des[0].Name(), "secret")
	assert.Len(t, des[0].Name(), 64)
	info, err := des[0].Info()
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

func TestFileCacheBoundsItsSizeAndDropsBrokenEntries(t *testing.T) {
	dir := t.TempDir()
	c, err := engine.NewFileCache(dir, 4000)
	require.NoError(t, err)
	ctx := context.Background()
	key := func(i int) string { return fmt.Sprintf("%064x", i) }
	for i := range 10 {
		require.NoError(t, c.Set(ctx, key(i), &engine.CachedResponse{Status: 200, Header: http.Header{"Etag": {"x"}}, Body: make([]byte, 1000)}))
	}
	var total int64
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		info, _ := de.Info()
		total += info.Size()
	}
	assert.LessOrEqual(t, total, int64(4000))
	r, err := c.Get(ctx, key(9))
	require.NoError(t, err)
	require.NotNil(t, r, "the newest entry is kept")
	assert.Equal(t, "x", r.Header.Get("Etag"))
	assert.Len(t, r.Body, 1000)

	require.NoError(t, os.WriteFile(filepath.Join(dir, key(9)), []byte("torn"), 0o600))
	r, err = c.Get(ctx, key(9))
	assert.Error(t, err)
	assert.Nil(t, r, "a broken entry is never served")
	_, err = os.Stat(filepath.Join(dir, key(9)))
	assert.True(t, os.IsNotExist(err), "and is removed")

	_, err = c.Get(ctx, "../../etc/passwd")
	assert.ErrorContains(t, err, "not a hex digest")
}

func TestNewFileCacheNamesAnUnusableDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err := engine.NewFileCache(filepath.Join(file, "sub"), 0)
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "cache directory"), err.Error())
}

func TestCacheStatusIsNotedOnTheRequestSpan(t *testing.T) {
	api := newQuotaAPI(t)
	rig := newOtelRig(t)
	e := newEngine(t, rig.apply(engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0)}))
	cget(t, e, "/items/1")
	cget(t, e, "/items/1")
	reqs, _ := rig.requestSpans()
	require.Len(t, reqs, 2)
	var got []string
	for _, s := range reqs {
		for _, a := range s.Attributes() {
			if a.Key == "courier.cache" {
				got = append(got, a.Value.AsString())
			}
		}
	}
	assert.ElementsMatch(t, []string{"miss", "revalidated"}, got)
}

func TestCallerAuthorizationIsNotTheEnginesToRefresh(t *testing.T) {
	var refreshes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refresh" {
			refreshes.Add(1)
			fmt.Fprint(w, `{"access_token":"new"}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer engine" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(srv.Close)
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Auth: engine.Auth{AccessToken: "engine", RefreshToken: "r", Refresh: &engine.RefreshConfig{Path: "/refresh"}}})
	resp, err := e.Get(ctxTimeout(t, 10*time.Second), "/x", requests.WithHeader("Authorization", "Bearer someone-else"))
	require.Error(t, err)
	assert.Equal(t, http.StatusUnauthorized, resp.Status)
	assert.Zero(t, refreshes.Load(), "a 401 to the caller's own credentials says nothing of the engine's token")
}
