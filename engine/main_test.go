package engine_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/courier-go/courier/engine"
)

// TestMain runs the whole suite twice: with the admission gate's fast path
// (the default), then with every request forced through the dispatcher, so
// that each guarantee is proven on both paths. Set COURIER_TEST_PATH to
// "fast" or "slow" to run one of them only.
func TestMain(m *testing.M) {
	code := 0
	path := os.Getenv("COURIER_TEST_PATH")
	if path != "slow" {
		code = m.Run()
	}
	if code == 0 && path != "fast" {
		fmt.Println("--- the same tests, every request through the dispatcher (slow path)")
		engine.ForceSlowPath(true)
		code = m.Run()
		engine.ForceSlowPath(false)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
