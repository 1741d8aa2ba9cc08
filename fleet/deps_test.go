package fleet_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	redisModule  = "github.com/redis/go-redis/v9"
	fleetPackage = "github.com/courier-go/courier/fleet"
)

// TestOnlyFleetUsersLinkRedis checks that the Redis client reaches a program
// only through an import of fleet/: the engine, the library packages and
// every program that does not use fleet mode stay free of it.
func TestOnlyFleetUsersLinkRedis(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("go command not on PATH: in CI this check must run")
		}
		t.Skip("go command not on PATH")
	}
	cmd := exec.Command(goBin, "list", "-f", "{{.ImportPath}}\t{{join .Deps \" \"}}", "github.com/courier-go/courier/...")
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", exitStderr(err))

	linksRedis := map[string]bool{}
	linksFleet := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, "\t")
		for _, d := range strings.Fields(deps) {
			if d == redisModule || strings.HasPrefix(d, redisModule+"/") {
				linksRedis[pkg] = true
			}
			if d == fleetPackage {
				linksFleet[pkg] = true
			}
		}
	}
	require.NotEmpty(t, linksRedis, "go list found no package that links %s; the check is broken", redisModule)
	require.True(t, linksRedis[fleetPackage], "fleet/ itself must link %s", redisModule)
	for pkg := range linksRedis {
		if pkg == fleetPackage {
			continue
		}
		assert.True(t, linksFleet[pkg], "%s links %s without importing fleet/", pkg, redisModule)
	}
	for _, pkg := range []string{
		"github.com/courier-go/courier/engine",
		"github.com/courier-go/courier/requests",
		"github.com/courier-go/courier/errors",
		"github.com/courier-go/courier/upload",
		"github.com/courier-go/courier/internal/demo",
	} {
		assert.False(t, linksRedis[pkg], "%s must not link %s", pkg, redisModule)
	}
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
