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
