package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// The heap floor: courier's live heap is small (the window's requests and
// their bodies), and at Go's default GOGC=100 the collector runs each time
// that small heap doubles, many times a second in a fast fetch. The floor
// lets the heap grow to heapFloorBytes before a collection, and to twice
// the live heap once that is larger, so the heap stays bounded by
// max(floor, 2 × live) as with GOGC=100 on a big heap, and small batches
// collect far less often.
//
// After every collection the floor's watch (a finalizer on a sentinel,
// armed again each cycle) reads the live heap the collection left and sets
// GOGC so that the next one comes at that bound. A user's own GOGC or
// GOMEMLIMIT is a decision already made: the floor then stays off.

// heapFloorBytes is the heap size below which the collector does not run.
const heapFloorBytes = 64 << 20

// goHeapMinimum is the Go runtime's smallest heap goal at GOGC=100: below
// it, the goal is this times GOGC/100, whatever the live heap.
const goHeapMinimum = 4 << 20

type heapFloor struct {
	mu      sync.Mutex // protects the fields below; held by adjust and stop
	floor   uint64
	stopped bool
	sample  []metrics.Sample
	percent int // the GOGC last set
}

// startHeapFloor starts the floor unless the environment sets GOGC or
// GOMEMLIMIT. stop ends it and puts GOGC back to the default.
func startHeapFloor() (stop func()) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	h := newHeapFloor(heapFloorBytes)
	h.arm()
	return h.stop
}

func newHeapFloor(floor uint64) *heapFloor {
	h := &heapFloor{
		floor:   floor,
		sample:  []metrics.Sample{{Name: "/gc/heap/live:bytes"}},
		percent: 100,
	}
	h.adjust()
	return h
}

// arm sets the watch that adjusts GOGC after the next collection.
func (h *heapFloor) arm() {
	s := new(heapFloorSentinel)
	runtime.SetFinalizer(s, func(*heapFloorSentinel) {
		// On the finalizer goroutine, after a collection.
		if h.adjust() {
			h.arm()
		}
	})
}

// heapFloorSentinel is the object whose collection marks a cycle's end. It
// is larger than the runtime's 16-byte tiny blocks, so it is a heap object
// of its own: a tiny one shares its block with others, and its finalizer
// may never run.
type heapFloorSentinel struct{ _ [32]byte }

// live is the heap the last collection left, in bytes. h.mu is held.
func (h *heapFloor) live() uint64 {
	metrics.Read(h.sample)
	if h.sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return h.sample[0].Value.Uint64()
}

// adjust sets GOGC for the live heap the last collection left, unless the
// floor was stopped; it reports whether the floor still runs.
func (h *heapFloor) adjust() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return false
	}
	// A change of a tenth or less is left alone: the live heap moves a
	// little every cycle.
	if p := floorPercent(h.floor, h.live()); abs(p-h.percent) > h.percent/10 {
		h.percent = p
		debug.SetGCPercent(p)
	}
	return true
}

// floorPercent is the GOGC at which a live heap of live bytes is next
// collected at max(floor, 2 × live): 100 once 2 × live reaches the floor,
// more below it. A live heap under the runtime's minimum (at the start,
// before any collection, it reads 0) counts as the minimum, since the
// runtime scales that minimum with GOGC too.
func floorPercent(floor, live uint64) int {
	base := max(live, goHeapMinimum)
	if 2*base >= floor {
		return 100
	}
	return int((floor - base) * 100 / base)
}

func (h *heapFloor) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped {
		h.stopped = true
		debug.SetGCPercent(100)
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
