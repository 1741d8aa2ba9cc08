package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
)

// TestFetchFailedTokenSaveIsLoudAndRetried pins a bug: when rotated
// tokens could not be written to --token-file, fetch printed a warning and
// exited 0, though the refresh token left in the file was dead.
func TestFetchFailedTokenSaveIsLoudAndRetried(t *testing.T) {
	for _, tc := range []struct {
		name    string
		recover bool // the file becomes writable again before the batch ends
	}{{"never saved", false}, {"saved by a retry", true}} {
		t.Run(tc.name, func(t *testing.T) {
			api := startDemo(t, demo.Config{AccessUses: 1}) // every request after the first needs a refresh
			tk := api.Login()
			file := filepath.Join(t.TempDir(), "tokens.json")
			require.NoError(t, os.WriteFile(file, []byte(`{"access_token":"`+tk.AccessToken+`","refresh_token":"`+tk.RefreshToken+`"}`), 0o600))

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, courierBin, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh",
				"--token-file", file, "--concurrency", "1", "--summary=false")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			stdin, err := cmd.StdinPipe()
			require.NoError(t, err)
			stdoutPipe, err := cmd.StdoutPipe()
			require.NoError(t, err)
			stderrPipe, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			stdout, stderr := bufio.NewReader(stdoutPipe), bufio.NewReader(stderrPipe)
			result := func() outLine {
				s, err := stdout.ReadString('\n')
				require.NoError(t, err)
				var l outLine
				require.NoError(t, json.Unmarshal([]byte(s), &l))
				return l
			}

			_, err = io.WriteString(stdin, "/items/1\n")
			require.NoError(t, err)
			assert.Nil(t, result().Error)
			// The file's place is taken by a directory that is not empty:
			// renaming onto it fails, even for root.
			require.NoError(t, os.Remove(file))
			require.NoError(t, os.Mkdir(file, 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(file, "x"), nil, 0o600))
			_, err = io.WriteString(stdin, "/items/2\n")
			require.NoError(t, err)
			assert.Nil(t, result().Error, "the refresh worked; only its save failed")
			warning, err := stderr.ReadString('\n')
			require.NoError(t, err)
			assert.Contains(t, warning, "saving rotated tokens to --token-file "+file)

			if tc.recover {
				require.NoError(t, os.RemoveAll(file))
			}
			require.NoError(t, stdin.Close())
			rest, err := io.ReadAll(stderr)
			require.NoError(t, err)
			err = cmd.Wait()
			if !tc.recover {
				var ee *exec.ExitError
				require.ErrorAs(t, err, &ee, "a failed save fails the run")
				assert.Equal(t, 1, ee.ExitCode())
				assert.Contains(t, string(rest), "the latest tokens are NOT saved in --token-file "+file)
				return
			}
			require.NoError(t, err, "the retry saved them: %s", rest)
			assert.Contains(t, string(rest), "rotated tokens saved to --token-file "+file)
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			assert.NotContains(t, string(data), tk.RefreshToken, "the file holds the rotated tokens")

			// They work: a run from the file refreshes without reusing a
			// retired refresh token.
			r := courier(t, "/items/3\n/items/4\n", nil, "fetch", "--base-url", api.URL, "--refresh-path", "/auth/refresh",
				"--token-file", file, "--concurrency", "1")
			require.Equal(t, 0, r.code, r.stderr)
			assert.Zero(t, api.Stats().RefreshReuse)
			assert.False(t, strings.Contains(r.stderr, "saving"))
		})
	}
}
