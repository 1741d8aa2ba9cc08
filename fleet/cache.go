package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/courier-go/courier/engine"
)

// CacheOptions tunes a [Cache]. The zero value gives the defaults. It is a
// plain value: [NewCache] keeps a copy.
type CacheOptions struct {
	// TTL is how long Redis keeps an entry after it was last stored or
	// revalidated, or until it stops being fresh, whichever is later: a
	// stale entry with a validator still saves a full answer. If zero,
	// [DefaultCacheTTL].
	TTL time.Duration
	// MaxEntryBytes bounds one entry; a larger answer is not stored. If
	// zero, [DefaultCacheEntryBytes].
	MaxEntryBytes int64
}

// Defaults of [CacheOptions].
const (
	DefaultCacheTTL        = 24 * time.Hour
	DefaultCacheEntryBytes = 8 << 20
)

// Cache is an [engine.Cache] in Redis, shared by every process of a fleet
// that names the same fleet on the same Redis: what one process stored,
// the others serve or revalidate. Bound its memory with Redis's own
// maxmemory and an eviction policy (allkeys-lru, volatile-ttl).
//
// Keys, with P = "courier:{NAME}:":
//
//	P cache:K   one entry (see engine.CachedResponse.MarshalBinary), K the
//	            engine's key: a digest, never a URL or a credential;
//	            expires after the entry's TTL (see CacheOptions.TTL)
//
// While Redis is unreachable every call fails at once; the engine logs it
// and sends the request as if nothing were stored.
//
// Cache is safe for concurrent use. The zero value is not usable; call
// [NewCache].
type Cache struct {
	rdb    redis.UniversalClient
	prefix string
	opts   CacheOptions
}

// NewCache returns the cache of the named fleet (see [CheckName]) on rdb.
// It does not contact Redis. The caller keeps ownership of rdb and closes
// it after the last use of the cache.
func NewCache(rdb redis.UniversalClient, name string, opts CacheOptions) (*Cache, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, fmt.Errorf("fleet cache: nil Redis client")
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultCacheTTL
	}
	if opts.MaxEntryBytes <= 0 {
		opts.MaxEntryBytes = DefaultCacheEntryBytes
	}
	return &Cache{rdb: rdb, prefix: keyPrefix(name) + "cache:", opts: opts}, nil
}

var _ engine.Cache = (*Cache)(nil)

// Get returns the entry under key, or nil when Redis has none.
func (c *Cache) Get(ctx context.Context, key string) (*engine.CachedResponse, error) {
	b, err := c.rdb.Get(ctx, c.prefix+key).Bytes()
	if err == redis.Nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet cache: get: %w", err)
	}
	r := new(engine.CachedResponse)
	if err := r.UnmarshalBinary(b); err != nil {
		c.rdb.Del(ctx, c.prefix+key) // never served, so better gone
		return nil, fmt.Errorf("fleet cache: %w", err)
	}
	return r, nil
}

// Set stores r under key with its TTL.
func (c *Cache) Set(ctx context.Context, key string, r *engine.CachedResponse) error {
	b, err := r.MarshalBinary()
	if err != nil {
		return fmt.Errorf("fleet cache: %w", err)
	}
	if int64(len(b)) > c.opts.MaxEntryBytes {
		return c.Delete(ctx, key)
	}
	ttl := max(c.opts.TTL, r.Lifetime-r.Age)
	if err := c.rdb.Set(ctx, c.prefix+key, b, ttl).Err(); err != nil {
		return fmt.Errorf("fleet cache: set: %w", err)
	}
	return nil
}

// Delete removes the entry under key.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := c.rdb.Del(ctx, c.prefix+key).Err(); err != nil {
		return fmt.Errorf("fleet cache: delete: %w", err)
	}
	return nil
}
