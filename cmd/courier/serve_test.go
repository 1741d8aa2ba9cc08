package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startServeDemo runs `courier serve-demo` and returns its URL; the process
// is interrupted when the test ends, and must exit 0.
func startServeDemo(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, courierBin, append([]string{"serve-demo"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		err := cmd.Wait()
		cancel()
		require.NoError(t, err, "serve-demo exits cleanly on interrupt")
	})
	wantTokens := slices.Contains(args, "--token-file")
	sc := bufio.NewScanner(stdout)
	var url string
	for sc.Scan() {
		if m := listenLine.FindStringSubmatch(sc.Text()); m != nil {
			url = m[1]
		}
		if url != "" && (!wantTokens || strings.Contains(sc.Text(), "tokens for a new session")) {
			break
		}
	}
	require.NotEmpty(t, url, "serve-demo printed its URL")
	go io.Copy(io.Discard, stdout) // until the process exits
	return url
}

// TestDemoCommandsHelpNamesTheCommandAndItsFlags pins --help of demo and
// serve-demo: it says which command it is and lists every flag, as fetch's
// does.
func TestDemoCommandsHelpNamesTheCommandAndItsFlags(t *testing.T) {
	for _, tc := range []struct {
		cmd   string
		flags []string
	}{
		{"demo", []string{"--requests", "--concurrency", "--fleet", "--progress"}},
		{"serve-demo", []string{"--addr", "--access-uses", "--access-ttl", "--flaky-percent", "--token-file"}},
		{"fetch", []string{"--base-url", "--resume", "--out"}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			r := courier(t, "", nil, tc.cmd, "--help")
			assert.Equal(t, 0, r.code, r.stderr)
			help := r.stdout + r.stderr
			assert.Contains(t, help, "Usage: courier "+tc.cmd+" ")
			assert.NotContains(t, help, "Usage of ")
			for _, f := range tc.flags {
				assert.Contains(t, help, f)
			}
		})
	}
}
