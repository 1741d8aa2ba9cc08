package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runtimeGoal is the Go runtime's heap goal at GOGC p, for a live heap of
// live bytes and scan bytes of stacks and globals.
func runtimeGoal(live, scan uint64, p int) uint64 {
	return max(goHeapMinimum*uint64(p)/100, live+(live+scan)*uint64(p)/100)
}

func TestFloorPercentPutsTheNextCollectionAtTheFloor(t *testing.T) {
	const mib = 1 << 20
	const floor = 64 * mib
	for _, c := range []struct {
		live, scan uint64
		want       int // 0: not pinned, only bounded
	}{
		{live: 0, want: 1600}, // before any collection: the runtime's minimum, scaled up to the floor
		{live: 1 * mib, scan: 256 << 10},
		{live: 4 * mib, want: 1500}, // 4 MiB + 15 × 4 MiB = 64 MiB
		{live: 4 * mib, scan: 4 * mib, want: 750},
		{live: 16 * mib, want: 300},
		{live: 16 * mib, scan: 1 * mib},
		{live: 30 * mib, scan: 2 * mib, want: 106},
		{live: 32 * mib, want: 100}, // GOGC=100's goal reaches the floor
		{live: 40 * mib, scan: 8 * mib, want: 100},
		{live: 500 * mib, scan: 1 * mib, want: 100},
	} {
		p := floorPercent(floor, c.live, c.scan)
		if c.want != 0 {
			assert.Equal(t, c.want, p, "live %d scan %d", c.live, c.scan)
		}
		bound := max(floor, runtimeGoal(c.live, c.scan, 100))
		goal := runtimeGoal(c.live, c.scan, p)
		assert.LessOrEqual(t, goal, bound, "live %d scan %d: GOGC %d lets the heap pass the floor", c.live, c.scan, p)
		// p is rounded down: the goal falls short of the bound by less
		// than one percent's worth of each term.
		slack := (c.live+c.scan)/100 + goHeapMinimum/100 + 1
		assert.GreaterOrEqual(t, goal+slack, bound, "live %d scan %d: GOGC %d collects before the floor", c.live, c.scan, p)
	}
	assert.Equal(t, heapFloorMaxPercent, floorPercent(1<<62, 0, 0), "GOGC stays an int32 for any floor")
}

// gcPercent reads GOGC without changing it, even for a moment: the
// floor's watch may set it at any time.
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

func TestHeapFloorRaisesGOGCAfterACollectionAndStopPutsItBack(t *testing.T) {
	before := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(before) })
	debug.SetGCPercent(100)

	// A floor of 0 leaves GOGC at 100. Raised far above this test's live
	// heap, it takes effect after the next collection.
	h := newHeapFloor(0)
	h.arm()
	t.Cleanup(h.stop)
	require.Equal(t, 100, gcPercent())
	h.mu.Lock()
	h.floor = 1 << 40
	h.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for gcPercent() == 100 {
		require.True(t, time.Now().Before(deadline), "no collection raised GOGC")
		runtime.GC()
		time.Sleep(time.Millisecond) // the finalizer goroutine's turn
	}
	h.mu.Lock()
	set := h.percent
	h.mu.Unlock()
	assert.Equal(t, set, gcPercent(), "GOGC is what the floor set")
	// Whatever this test process's live heap (under 1 GiB), a 1 TiB floor
	// is far above it.
	assert.Greater(t, set, 10_000, "a floor far above the live heap raises GOGC far")

	h.stop()
	assert.Equal(t, 100, gcPercent(), "stop puts GOGC back")
	for range 3 {
		runtime.GC()
	}
	time.Sleep(10 * time.Millisecond)
	assert.Equal(t, 100, gcPercent(), "a stopped floor changes nothing after later collections")
}

func TestHeapFloorStaysOffWhenTheUserSetGOGC(t *testing.T) {
	before := gcPercent()
	t.Cleanup(func() { debug.SetGCPercent(before) })
	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50)
	stop := startHeapFloor()
	defer stop()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	assert.Equal(t, 50, gcPercent(), "the user's GOGC stands")
}
