package engine

// DoubleResolves reports how many times a future was resolved a second time
// (refused); every test expects zero.
func DoubleResolves() int64 { return doubleResolves.Load() }

// Remembered reports how many breakers and how many hosts' latencies e
// keeps.
func Remembered(e *Engine) (breakers, latencies int) {
	if b := e.breakers; b != nil {
		b.mu.Lock()
		breakers = len(b.keys)
		b.mu.Unlock()
	}
	if x := e.hedger; x != nil {
		x.mu.Lock()
		latencies = len(x.keys)
		x.mu.Unlock()
	}
	return breakers, latencies
}

// ForceSlowPath sends every request through the dispatcher, as when the
// admission gate is closed. Call it only while no engine runs.
func ForceSlowPath(on bool) { slowPathOnly = on }
