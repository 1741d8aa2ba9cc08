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

func TestFloorPercentCollectsAtTheFloorOrTwiceTheLiveHeap(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live uint64
		want int
	}{
		{live: 0, want: 1500}, // before any collection: the runtime's 4 MiB minimum
		{live: 1, want: 1500},
		{live: 4 * mib, want: 1500}, // 4 MiB + 15 × 4 MiB = 64 MiB
		{live: 16 * mib, want: 300},
		{live: 32 * mib, want: 100}, // 2 × live reaches the floor
		{live: 500 * mib, want: 100},
	} {
		got := floorPercent(64*mib, c.live)
		assert.Equal(t, c.want, got, "live heap %d bytes", c.live)
		// The runtime's goal: the live heap grown by GOGC percent, and
		// never under its minimum scaled by GOGC.
		base := max(c.live, goHeapMinimum)
		goal := max(c.live+c.live*uint64(got)/100, goHeapMinimum*uint64(got)/100)
		assert.LessOrEqual(t, goal, max(uint64(64*mib), 2*c.live), "live heap %d bytes: the heap stays within the floor", c.live)
		assert.GreaterOrEqual(t, base+base*uint64(got)/100, min(uint64(64*mib), 2*c.live), "live heap %d bytes: no collection before the floor", c.live)
	}
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
