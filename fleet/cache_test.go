package fleet_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/redistest"
	"github.com/courier-go/courier/requests"
)

// etagAPI answers every GET with the same body and ETag, and a 304 to a
// request that already has it; full counts the answers sent in full.
func etagAPI(t *testing.T, cacheControl string) (*httptest.Server, *atomic.Int64) {
	var full atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"v1"`)
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		full.Add(1)
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv, &full
}

func cacheEngine(t *testing.T, base string, c engine.Cache) *engine.Engine {
	e, err := engine.New(engine.Config{BaseURL: base, Cache: c})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	return e
}

func TestCacheIsSharedByTheFleet(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	api, full := etagAPI(t, "no-cache")
	var bodies []string
	var statuses []requests.CacheStatus
	for range 3 { // three processes, each with its own client
		c, err := fleet.NewCache(client(t, srv), "crawl", fleet.CacheOptions{TTL: time.Hour})
		require.NoError(t, err)
		resp, err := cacheEngine(t, api.URL, c).Get(ctxT(t), "/items/7")
		require.NoError(t, err)
		bodies = append(bodies, string(resp.Body))
		statuses = append(statuses, resp.Cache)
	}
	assert.Equal(t, []requests.CacheStatus{requests.CacheMiss, requests.CacheRevalidated, requests.CacheRevalidated}, statuses)
	assert.Equal(t, bodies[0], bodies[1])
	assert.Equal(t, bodies[0], bodies[2])
	assert.EqualValues(t, 1, full.Load(), "one full answer for the whole fleet")

	// One key an entry, a digest, with the TTL.
	rdb := client(t, srv)
	keys, err := rdb.Keys(ctxT(t), "*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	assert.Regexp(t, `^courier:\{crawl\}:cache:[0-9a-f]{64}$`, keys[0])
	ttl, err := rdb.PTTL(ctxT(t), keys[0]).Result()
	require.NoError(t, err)
	assert.InDelta(t, time.Hour.Seconds(), ttl.Seconds(), 60)
}

func TestCacheTTLCoversAFreshLifetime(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	api, _ := etagAPI(t, "max-age=7200")
	c, err := fleet.NewCache(client(t, srv), "long", fleet.CacheOptions{TTL: time.Minute})
	require.NoError(t, err)
	_, err = cacheEngine(t, api.URL, c).Get(ctxT(t), "/x")
	require.NoError(t, err)
	rdb := client(t, srv)
	keys, err := rdb.Keys(ctxT(t), "*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	ttl, err := rdb.PTTL(ctxT(t), keys[0]).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Hour, "kept while fresh, though TTL is shorter")
}

func TestCacheWithRedisDownSendsTheRequest(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	api, full := etagAPI(t, "max-age=60")
	c, err := fleet.NewCache(client(t, srv), "down", fleet.CacheOptions{})
	require.NoError(t, err)
	e := cacheEngine(t, api.URL, c)
	srv.Kill()
	for range 2 {
		resp, err := e.Get(ctxT(t), "/x")
		require.NoError(t, err, "a cache that fails never fails the request")
		assert.Equal(t, requests.CacheMiss, resp.Cache)
	}
	assert.EqualValues(t, 2, full.Load())
}

func TestNewCacheChecksItsName(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	_, err := fleet.NewCache(client(t, srv), "has space", fleet.CacheOptions{})
	assert.ErrorContains(t, err, "fleet name")
}
