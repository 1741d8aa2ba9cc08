package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// courierBin is the real binary, built once for every test.
var courierBin string

func TestMain(m *testing.M) {
	if fuzzing() {
		// A fuzz run (its coordinator and every worker process) runs only
		// the fuzz target, which needs no binary: building one in each
		// worker costs more than the fuzzing.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "courier-bin-")
	if err != nil {
		panic(err)
	}
	courierBin = filepath.Join(dir, "courier")
	build := exec.Command("go", "build", "-race", "-o", courierBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		panic("building courier: " + err.Error())
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// fuzzing reports whether this process runs a fuzz target (go test -fuzz).
func fuzzing() bool {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzz") {
			return true
		}
	}
	return false
}

type cliRun struct {
	stdout, stderr string
	code           int
}

// courier runs the binary with a clean environment plus env.
func courier(t *testing.T, stdin string, env []string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, courierBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return cliRun{stdout: out.String(), stderr: errb.String(), code: code}
}

// outLine is one line of fetch's output.
type outLine struct {
	Line       int             `json:"line"`
	ID         json.RawMessage `json:"id"`
	Method     string          `json:"method"`
	Path       string          `json:"path"`
	Status     int             `json:"status"`
	Attempts   int             `json:"attempts"`
	DurationMS float64         `json:"duration_ms"`
	Body       json.RawMessage `json:"body"`
	Error      *string         `json:"error"`
}

func parseOutput(t *testing.T, s string) []outLine {
	t.Helper()
	var out []outLine
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var l outLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "output line %q", sc.Text())
		out = append(out, l)
	}
	return out
}
