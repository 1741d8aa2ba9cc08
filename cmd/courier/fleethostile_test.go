package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/fleet"
	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/internal/redistest"
)

// The tests of this file run the courier binary against a Redis that is
// hostile on purpose: shared by two fleets, refusing us, full, edited by
// hand.

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	c, err := fleet.NewClient(url)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func writeInput(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "/items/%d\n", i)
	}
	p := filepath.Join(t.TempDir(), "in.txt")
	require.NoError(t, os.WriteFile(p, []byte(b.String()), 0o600))
	return p
}

// A worker of fleet B joined fleet A's batch of the same name and sent
// A's lines to B's API with B's token; batch rm of one removed the other.
func TestBatchOfAnotherFleetIsNeverJoined(t *testing.T) {
	rds := redistest.Start(t, redistest.Options{})
	apiA := startCountingAPI(t, demo.Config{})
	apiB := startCountingAPI(t, demo.Config{})
	in := writeInput(t, 20)
	r := courier(t, "", tokenEnv(apiA.Login()), "fetch", "--base-url", apiA.URL, "--redis", rds.URL(), "--fleet", "a", "--batch", "orders", in)
	require.Equal(t, 0, r.code, r.stderr)
	sentToA := apiA.requests.Load()

	r = courier(t, "", tokenEnv(apiB.Login()), "fetch", "--base-url", apiB.URL, "--redis", rds.URL(), "--fleet", "b", "--batch", "orders")
	assert.Equal(t, exitUsage, r.code, r.stderr)
	assert.Contains(t, r.stderr, "no such batch")
	assert.Contains(t, r.stderr, "fleet b")

	// Fleet a's name, but another API: refused, naming both.
	r = courier(t, "", tokenEnv(apiB.Login()), "fetch", "--base-url", apiB.URL, "--redis", rds.URL(), "--fleet", "a", "--batch", "orders")
	assert.Equal(t, exitUsage, r.code, r.stderr)
	assert.Contains(t, r.stderr, "was made for "+apiA.URL)
	assert.Contains(t, r.stderr, apiB.URL)
	assert.Zero(t, apiB.requests.Load(), "nothing went to B's API")
	assert.Equal(t, sentToA, apiA.requests.Load())

	r = courier(t, "", nil, "batch", "rm", "--redis", rds.URL(), "--fleet", "b", "orders")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "no batch orders in fleet b")
	r = courier(t, "", nil, "batch", "status", "--redis", rds.URL(), "--fleet", "a", "orders")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "done        20\n")
	assert.Contains(t, r.stdout, "base URL    "+apiA.URL)
}

// A misspelt batch name made a worker wait silently and left a stream
// key without a TTL that batch rm then refused to delete.
func TestBatchWorkerForAMisspeltBatchFails(t *testing.T) {
	rds := redistest.Start(t, redistest.Options{})
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	r := courier(t, "", env, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "orders", writeInput(t, 5))
	require.Equal(t, 0, r.code, r.stderr)
	start := time.Now()
	r = courier(t, "", env, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "ordres")
	assert.Equal(t, exitUsage, r.code, r.stderr)
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.Contains(t, r.stderr, "batch ordres")
	assert.Contains(t, r.stderr, "no such batch")
	assert.Contains(t, r.stderr, "--wait-for-batch")
	rdb := redisClient(t, rds.URL())
	keys, err := rdb.Keys(context.Background(), "*ordres*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "no key was made for it")
	keys, err = rdb.Keys(context.Background(), "*:batch:*").Result()
	require.NoError(t, err)
	for _, k := range keys {
		ttl, err := rdb.PTTL(context.Background(), k).Result()
		require.NoError(t, err)
		assert.Greater(t, ttl, time.Duration(0), "%s has a TTL", k)
	}
}

// Permanent Redis errors were reported as "Redis does not answer; waiting
// for it": an untrusted certificate waited until killed, and NOAUTH and
// WRONGPASS printed the same waiting line.
func TestFetchFailsAtOnceWhenRedisRefusesUs(t *testing.T) {
	files := redistest.NewTLS(t)
	other := redistest.NewTLS(t)
	tlsArgs, port := redistest.TLSArgs(t, files, true)
	rds := redistest.Start(t, redistest.Options{Password: "s3cret-pw", Args: tlsArgs})
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	tlsURL := fmt.Sprintf("rediss://127.0.0.1:%d", port)
	for _, tc := range []struct {
		name  string
		env   []string
		flags []string
		want  []string
	}{
		{"wrong password", nil, []string{"--redis", "unix://:wrong-pw@" + rds.Socket()}, []string{"WRONGPASS", "authentication failed", "holds a password", "COURIER_REDIS_PASSWORD"}},
		{"no password", nil, []string{"--redis", "unix://" + rds.Socket()}, []string{"NOAUTH", "authentication failed"}},
		{"untrusted certificate", []string{"COURIER_REDIS_PASSWORD=s3cret-pw"},
			[]string{"--redis", tlsURL, "--redis-ca", other.CA, "--redis-cert", files.ClientCert, "--redis-key", files.ClientKey},
			[]string{"certificate signed by unknown authority", "TLS failed", "--redis-ca"}},
		{"no client certificate", []string{"COURIER_REDIS_PASSWORD=s3cret-pw"},
			[]string{"--redis", tlsURL, "--redis-ca", files.CA}, []string{"certificate required", "--redis-cert"}},
		{"half a client certificate", nil, []string{"--redis", tlsURL, "--redis-cert", files.ClientCert}, []string{"--redis-key", "both"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			args := append([]string{"fetch", "--base-url", api.URL, "--summary=false"}, tc.flags...)
			r := courier(t, "/items/1\n", append(env, tc.env...), args...)
			assert.Equal(t, exitUsage, r.code, r.stderr)
			assert.Less(t, time.Since(start), 10*time.Second, "at once")
			for _, w := range tc.want {
				assert.Contains(t, r.stderr, w)
			}
			assert.NotContains(t, r.stderr, "waiting for it")
			assert.NotContains(t, r.stderr, "wrong-pw")
			assert.NotContains(t, r.stderr, "s3cret-pw")
		})
	}
	assert.Zero(t, api.requests.Load(), "nothing was sent")

	// The CA and the client certificate given, the fleet runs over TLS.
	r := courier(t, "/items/1\n/items/2\n", append(env, "COURIER_REDIS_PASSWORD=s3cret-pw"), "fetch", "--base-url", api.URL,
		"--redis", tlsURL, "--redis-ca", files.CA, "--redis-cert", files.ClientCert, "--redis-key", files.ClientKey, "--summary=false")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Len(t, parseOutput(t, r.stdout), 2)
	assert.Empty(t, r.stderr)
}

// A worker warns at start when Redis may evict batch keys, and one that
// cannot store its results (maxmemory reached, noeviction) exits
// non-zero naming the cause, its lines left to the next worker.
func TestBatchWorkerAgainstAFullRedis(t *testing.T) {
	rds := redistest.Start(t, redistest.Options{Args: []string{"--maxmemory-policy", "volatile-lru"}})
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	r := courier(t, "", env, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "evictable", writeInput(t, 3))
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "maxmemory-policy volatile-lru, which can evict the batch's keys")

	rdb := redisClient(t, rds.URL())
	ctx := context.Background()
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	const lines = 400
	// The batch is made here, so that no worker has worked on it yet.
	b, err := fleet.OpenFleetBatch(rdb, fleet.DefaultName(api.URL, ""), "full", fleet.BatchOptions{BaseURL: api.URL})
	require.NoError(t, err)
	var ls []fleet.Line
	for n := 1; n <= lines; n++ {
		text := fmt.Sprintf("/items/%d", n)
		ls = append(ls, fleet.Line{N: n, Text: text, Hash: lineHash(text)})
	}
	require.NoError(t, b.Add(ctx, ls, false))
	require.NoError(t, b.Seal(ctx, lines))

	// Redis fills up as the API takes the worker's 30th request.
	base := api.requests.Load()
	full := func(n int64) {
		if n == base+30 {
			_ = rdb.ConfigSet(context.Background(), "maxmemory", "1").Err()
		}
	}
	api.onRequest.Store(&full)
	start := time.Now()
	r = courier(t, "", env, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "full", "--concurrency", "4", "--lease", "300ms")
	api.onRequest.Store(nil)
	assert.Equal(t, exitFailed, r.code, r.stderr)
	assert.Less(t, time.Since(start), 30*time.Second, "it did not hang")
	assert.Contains(t, r.stderr, "OOM")

	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())
	r = courier(t, "", env, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "full", "--concurrency", "4", "--lease", "300ms")
	require.Equal(t, 0, r.code, r.stderr)
	r = courier(t, "", nil, "collect", "--redis", rds.URL(), "--batch", "full")
	require.Equal(t, 0, r.code, r.stderr)
	requireCollected(t, r.stdout, lines)
}

func findKey(t *testing.T, rdb *redis.Client, pattern string) string {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), pattern).Result()
	require.NoError(t, err)
	require.Len(t, keys, 1, pattern)
	return keys[0]
}

// Hand-written entries: "5-1" after "5-0" made collect loop forever
// rewriting line 5, and an auto-ID entry was run and counted (done 6 of
// 5, pending -1).
func TestCollectAndWorkersSkipHandWrittenEntries(t *testing.T) {
	rds := redistest.Start(t, redistest.Options{})
	api := startCountingAPI(t, demo.Config{})
	env := tokenEnv(api.Login())
	r := courier(t, "", env, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "edited", writeInput(t, 5))
	require.Equal(t, 0, r.code, r.stderr)
	rdb := redisClient(t, rds.URL())
	ctx := context.Background()
	stream := findKey(t, rdb, "*:batch:edited:lines")
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: "5-1", Values: []any{"hash", "x", "text", "/items/99"}}).Err())
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: "*", Values: []any{"hash", "x", "text", "/items/98"}}).Err())
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"only", "junk"}}).Err())
	sent := api.requests.Load()

	for _, args := range [][]string{{}, {"--wait"}} {
		r = courier(t, "", nil, append([]string{"collect", "--redis", rds.URL(), "--batch", "edited"}, args...)...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
		requireCollected(t, r.stdout, 5)
	}
	r = courier(t, "", env, "fetch", "--base-url", api.URL, "--redis", rds.URL(), "--batch", "edited")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, sent, api.requests.Load(), "no hand-written entry was sent")
	r = courier(t, "", nil, "batch", "status", "--redis", rds.URL(), "edited")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "lines       5\ndone        5\nfailed      0\npending     0\n")
	assert.Contains(t, r.stdout, "malformed   3")
}
