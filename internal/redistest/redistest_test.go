package redistest_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/courier-go/courier/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// do sends one inline command and returns the first line of the answer.
func do(t *testing.T, socket, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write([]byte(cmd + "\r\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(line)
}

func TestServerAnswersOnItsSocketOnly(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	assert.Equal(t, "+PONG", do(t, s.Socket(), "PING"))
	assert.Equal(t, "unix://"+s.Socket(), s.URL())
	// No TCP listener: port 0 means none.
	assert.Contains(t, do(t, s.Socket(), "CONFIG GET port"), "*2")
}

func TestServersArePrivate(t *testing.T) {
	a := redistest.Start(t, redistest.Options{})
	b := redistest.Start(t, redistest.Options{})
	assert.Equal(t, "+OK", do(t, a.Socket(), "SET k from-a"))
	assert.Equal(t, "$-1", do(t, b.Socket(), "GET k"), "b must not see a's key")
}

func TestRestartKeepsAppendOnlyData(t *testing.T) {
	s := redistest.Start(t, redistest.Options{AppendOnly: true})
	assert.Equal(t, "+OK", do(t, s.Socket(), "SET k v"))
	s.Stop()
	assert.False(t, s.Running())
	_, err := net.Dial("unix", s.Socket())
	assert.Error(t, err, "a stopped server must not answer")
	s.Restart()
	assert.True(t, s.Running())
	assert.Equal(t, "$1", do(t, s.Socket(), "GET k"))
}

func TestKillKeepsAppendOnlyData(t *testing.T) {
	s := redistest.Start(t, redistest.Options{AppendOnly: true})
	assert.Equal(t, "+OK", do(t, s.Socket(), "SET k v"))
	s.Kill()
	s.Restart()
	assert.Equal(t, "$1", do(t, s.Socket(), "GET k"))
}

func TestRestartWithoutPersistenceForgets(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	assert.Equal(t, "+OK", do(t, s.Socket(), "SET k v"))
	s.Restart()
	assert.Equal(t, "$-1", do(t, s.Socket(), "GET k"))
}

func TestPasswordIsRequired(t *testing.T) {
	s := redistest.Start(t, redistest.Options{Password: "sekrit"})
	assert.True(t, strings.HasPrefix(do(t, s.Socket(), "GET k"), "-NOAUTH"))
}

// TestMissingBinary runs this test binary again with an empty PATH: without
// CI the fleet test skips, with CI=true it fails.
func TestMissingBinary(t *testing.T) {
	if os.Getenv("REDISTEST_CHILD") == "1" {
		redistest.Start(t, redistest.Options{})
		t.Log("started")
		return
	}
	for _, tc := range []struct {
		ci       string
		wantFail bool
		wantOut  string
	}{
		{ci: "", wantFail: false, wantOut: "SKIP"},
		{ci: "false", wantFail: false, wantOut: "SKIP"},
		{ci: "true", wantFail: true, wantOut: "CI is set"},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMissingBinary$", "-test.v")
			cmd.Env = append(os.Environ(), "REDISTEST_CHILD=1", "PATH="+t.TempDir(), "CI="+tc.ci)
			out, err := cmd.CombinedOutput()
			if tc.wantFail {
				assert.Error(t, err, "%s", out)
			} else {
				assert.NoError(t, err, "%s", out)
			}
			assert.Contains(t, string(out), tc.wantOut)
			assert.NotContains(t, string(out), "started")
		})
	}
}

func TestProxyCutsAndRestores(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	p := s.Proxy(t)
	addr := strings.TrimPrefix(p.URL(), "redis://")
	send := func() (string, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}
	line, err := send()
	require.NoError(t, err)
	assert.Equal(t, "+PONG\r\n", line)

	// A connection open across the cut is closed by it.
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	p.Cut()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = bufio.NewReader(c).ReadString('\n')
	assert.Error(t, err)
	_, err = send()
	assert.Error(t, err, "cut: no answer")

	p.Restore()
	line, err = send()
	require.NoError(t, err)
	assert.Equal(t, "+PONG\r\n", line)
}
