package fleet_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// The tests stop Redis on purpose; the client's dial-failure lines
	// would only bury the test output.
	redis.SetLogger(quiet{})
	goleak.VerifyTestMain(m)
}
