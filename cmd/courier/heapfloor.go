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
// lets the heap grow to heapFloorBytes before a collection; once the heap
// GOGC=100 would allow is larger, GOGC is 100. So the heap stays within
// max(floor, what GOGC=100 allows), and small batches collect far less
// often.
//
// After every collection the floor's watch (a finalizer on a sentinel,
// armed again each cycle) reads what the collection left (the live heap,
// and the stacks and globals the runtime counts with it) and sets GOGC so
// that the next collection comes at that bound. A user's own GOGC or
// GOMEMLIMIT is a decision already made: the floor then stays off.

// heapFloorBytes is the heap size below which the collector does not run.
const heapFloorBytes = 64 << 20

// goHeapMinimum is the Go runtime's smallest heap goal at GOGC=100; at
// another GOGC the smallest goal is this times GOGC/100, whatever the live
// heap.
const goHeapMinimum = 4 << 20

// heapFloorMaxPercent bounds the GOGC the floor sets (the runtime keeps it
// in an int32).
const heapFloorMaxPercent = 1 << 20

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
		floor: floor,
		sample: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"},
			{Name: "/gc/scan/stack:bytes"},
			{Name: "/gc/scan/globals:bytes"},
		},
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

// left is what the last collection left, in bytes: the live heap, and the
// stacks and globals the runtime adds to it when it sets the next goal.
// h.mu is held.
func (h *heapFloor) left() (live, scan uint64) {
	metrics.Read(h.sample)
	n := [3]uint64{}
	for i, s := range h.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			n[i] = s.Value.Uint64()
		}
	}
	return n[0], n[1] + n[2]
}

// adjust sets GOGC for what the last collection left, unless the floor was
// stopped; it reports whether the floor still runs.
func (h *heapFloor) adjust() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return false
	}
	// A rise of a tenth or less is left alone, as the live heap moves a
	// little every cycle; a fall is always made, so that the next goal
	// never passes the floor.
	live, scan := h.left()
	p := floorPercent(h.floor, live, scan)
	if p < h.percent || p > h.percent+h.percent/10 {
		h.percent = p
		debug.SetGCPercent(p)
	}
	return true
}

// floorPercent is the GOGC at which the runtime's next heap goal comes at
// max(floor, the goal at GOGC=100), for a live heap of live bytes and scan
// bytes of stacks and globals. The runtime's goal is
//
//	max(goHeapMinimum × GOGC/100, live + (live + scan) × GOGC/100)
//
// so the floor's GOGC is the smaller of what brings each term to the floor,
// and never under 100.
func floorPercent(floor, live, scan uint64) int {
	if live >= floor {
		return 100
	}
	p := min(percentOf(floor-live, max(live+scan, 1)), percentOf(floor, goHeapMinimum))
	return int(max(p, 100))
}

// percentOf is a × 100 / b, rounded down, at most heapFloorMaxPercent,
// without overflow.
func percentOf(a, b uint64) uint64 {
	q, r := a/b, a%b
	if q >= heapFloorMaxPercent/100 {
		return heapFloorMaxPercent
	}
	return min(q*100+r*100/b, heapFloorMaxPercent)
}

func (h *heapFloor) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped {
		h.stopped = true
		debug.SetGCPercent(100)
	}
}
