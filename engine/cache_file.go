package engine

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/courier-go/courier/errors"
)

// FileCache is a [Cache] on disk: one file per entry in a directory,
// named by the entry's key, so entries outlive the process and a second
// run revalidates what the first stored. Each entry is written like the
// token file: a temporary file beside it, flushed to disk, renamed over
// the old one, so a reader (another process included) sees a whole entry
// or none. When the entries would take more than the cache's bound, the
// least recently used go.
//
// Make one with [NewFileCache]; the zero value is not usable. FileCache
// is safe for concurrent use; processes may share a directory, each
// bounding what it knows of it.
type FileCache struct {
	dir string
	max int64

	mu    sync.Mutex // protects index and size
	index map[string]fileEntry
	size  int64
}

type fileEntry struct {
	size int64
	used time.Time
}

// NewFileCache opens the cache in dir, creating it (mode 0700) if need
// be, and holding at most maxBytes of entry files; maxBytes <= 0 means
// DefaultCacheBytes. A symbolic link to a directory is followed. It fails
// when dir cannot be made, read or written.
func NewFileCache(dir string, maxBytes int64) (*FileCache, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheBytes
	}
	if dir == "" {
		return nil, fmt.Errorf("cache directory: empty path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	c := &FileCache{dir: real, max: maxBytes, index: map[string]fileEntry{}}
	// Prove the directory writable now rather than at the first answer.
	probe, err := os.CreateTemp(real, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("cache directory %s: %w", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	des, err := os.ReadDir(real)
	if err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		info, err := de.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if strings.Contains(name, ".tmp-") && time.Since(info.ModTime()) > time.Hour {
			os.Remove(filepath.Join(real, name)) // left by a process that died writing
			continue
		}
		if validCacheKey(name) {
			c.index[name] = fileEntry{size: info.Size(), used: info.ModTime()}
			c.size += info.Size()
		}
	}
	c.mu.Lock()
	c.evict()
	c.mu.Unlock()
	return c, nil
}

// Dir returns the cache's directory, symbolic links resolved.
func (c *FileCache) Dir() string { return c.dir }

// validCacheKey reports whether key is one the engine makes: a hex
// digest, which can name a file and nothing else.
func validCacheKey(key string) bool {
	if len(key) < 16 || len(key) > 128 {
		return false
	}
	return strings.Trim(key, "0123456789abcdef") == ""
}

// Get reads the entry under key, or returns nil when there is none.
func (c *FileCache) Get(_ context.Context, key string) (*CachedResponse, error) {
	if !validCacheKey(key) {
		return nil, fmt.Errorf("file cache: key %q is not a hex digest", key)
	}
	path := filepath.Join(c.dir, key)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.mu.Lock()
		c.forget(key)
		c.mu.Unlock()
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("file cache: %w", err)
	}
	r := new(CachedResponse)
	if err := r.UnmarshalBinary(b); err != nil {
		os.Remove(path) // never served, so better gone
		return nil, fmt.Errorf("file cache: %s: %w", key, err)
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now) // recency for the next process's eviction
	c.mu.Lock()
	if _, known := c.index[key]; !known {
		c.size += int64(len(b)) // written by another process
	}
	c.index[key] = fileEntry{size: int64(len(b)), used: now}
	c.mu.Unlock()
	return r, nil
}

// Set writes r under key: temporary file, fsync, rename. The directory
// itself is not flushed: an entry lost to a crash is a miss, not a
// wrong answer.
func (c *FileCache) Set(_ context.Context, key string, r *CachedResponse) (err error) {
	if !validCacheKey(key) {
		return fmt.Errorf("file cache: key %q is not a hex digest", key)
	}
	b, err := r.MarshalBinary()
	if err != nil {
		return fmt.Errorf("file cache: %w", err)
	}
	if int64(len(b)) > c.max {
		return c.Delete(context.Background(), key)
	}
	tmp, err := os.CreateTemp(c.dir, key+".tmp-*")
	if err != nil {
		return fmt.Errorf("file cache: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("file cache: %w", err)
	}
	if _, err = tmp.Write(b); err != nil {
		return fmt.Errorf("file cache: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("file cache: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("file cache: %w", err)
	}
	if err = os.Rename(tmp.Name(), filepath.Join(c.dir, key)); err != nil {
		return fmt.Errorf("file cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forget(key)
	c.index[key] = fileEntry{size: int64(len(b)), used: time.Now()}
	c.size += int64(len(b))
	c.evict()
	return nil
}

// Delete removes the entry under key.
func (c *FileCache) Delete(_ context.Context, key string) error {
	if !validCacheKey(key) {
		return fmt.Errorf("file cache: key %q is not a hex digest", key)
	}
	err := os.Remove(filepath.Join(c.dir, key))
	c.mu.Lock()
	c.forget(key)
	c.mu.Unlock()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file cache: %w", err)
	}
	return nil
}

// forget drops key from the index; c.mu is held.
func (c *FileCache) forget(key string) {
	if e, ok := c.index[key]; ok {
		c.size -= e.size
		delete(c.index, key)
	}
}

// evict removes the least recently used entries until the cache is
// within its bound, with some room to spare so that the next writes do
// not each scan the index; c.mu is held.
func (c *FileCache) evict() {
	if c.size <= c.max {
		return
	}
	keys := make([]string, 0, len(c.index))
	for k := range c.index {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return c.index[a].used.Compare(c.index[b].used) })
	target := c.max - c.max/10
	for _, k := range keys {
		if c.size <= target {
			break
		}
		os.Remove(filepath.Join(c.dir, k))
		c.forget(k)
	}
}
