package engine

import (
	"container/list"
	"context"
	"sync"
)

// MemoryCache is a [Cache] in memory, bounded by bytes: when an entry
// would take it past its bound, the least recently used entries go.
// Make one with [NewMemoryCache]; the zero value is not usable.
// MemoryCache is safe for concurrent use.
type MemoryCache struct {
	max int64

	mu      sync.Mutex // protects the fields below
	entries map[string]*list.Element
	lru     list.List // of *memoryEntry, most recently used first
	size    int64     // sum of the entries' sizes
}

type memoryEntry struct {
	key  string
	r    *CachedResponse
	size int64
}

// NewMemoryCache returns an empty cache that holds at most maxBytes of
// entries (bodies and headers); maxBytes <= 0 means DefaultCacheBytes. An
// entry larger than the bound is not stored.
func NewMemoryCache(maxBytes int64) *MemoryCache {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheBytes
	}
	return &MemoryCache{max: maxBytes, entries: map[string]*list.Element{}}
}

// Get returns the entry under key, or nil.
func (m *MemoryCache) Get(_ context.Context, key string) (*CachedResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if !ok {
		return nil, nil
	}
	m.lru.MoveToFront(el)
	return el.Value.(*memoryEntry).r, nil
}

// Set stores r under key, evicting the least recently used entries as
// the bound needs.
func (m *MemoryCache) Set(_ context.Context, key string, r *CachedResponse) error {
	size := r.Size()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remove(key)
	if size > m.max {
		return nil
	}
	for m.size+size > m.max {
		m.remove(m.lru.Back().Value.(*memoryEntry).key)
	}
	m.entries[key] = m.lru.PushFront(&memoryEntry{key: key, r: r, size: size})
	m.size += size
	return nil
}

// Delete removes the entry under key.
func (m *MemoryCache) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remove(key)
	return nil
}

// Len returns the number of entries and the bytes they take.
func (m *MemoryCache) Len() (entries int, bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries), m.size
}

// remove drops key's entry; m.mu is held.
func (m *MemoryCache) remove(key string) {
	if el, ok := m.entries[key]; ok {
		m.size -= el.Value.(*memoryEntry).size
		m.lru.Remove(el)
		delete(m.entries, key)
	}
}
