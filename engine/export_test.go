package engine

// DoubleResolves reports how many times a future was resolved a second time
// (refused); every test expects zero.
func DoubleResolves() int64 { return doubleResolves.Load() }
