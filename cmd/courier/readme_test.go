package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's shell examples are marked for this test: each ```sh block
// comes right after an HTML comment, "<!-- readme-test: run -->" for one
// that runs as written against the demo API, or "<!-- readme-test: skip:
// REASON -->" for one that needs what a test does not have (a Redis and an
// API of your own, the network).
var readmeMarker = regexp.MustCompile(`^<!-- readme-test: (run|skip: (.+)) -->$`)

// readmeBlock is one ```sh block of the README.
type readmeBlock struct {
	line int    // of its opening fence, 1-based
	run  bool   // marked run
	skip string // the reason, for a skipped block
	text string
}

// readmeShellBlocks returns the README's ```sh blocks; every one must be
// marked.
func readmeShellBlocks(t *testing.T, readme string) []readmeBlock {
	t.Helper()
	var blocks []readmeBlock
	lines := strings.Split(readme, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "```sh") {
			continue
		}
		b := readmeBlock{line: i + 1}
		var m []string
		if i > 0 {
			m = readmeMarker.FindStringSubmatch(strings.TrimSpace(lines[i-1]))
		}
		if m == nil {
			t.Errorf("README.md:%d: a sh block without a readme-test marker on the line before it", b.line)
		} else {
			b.run, b.skip = m[1] == "run", strings.TrimSpace(m[2])
		}
		var text strings.Builder
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			text.WriteString(lines[i] + "\n")
		}
		b.text = text.String()
		blocks = append(blocks, b)
	}
	return blocks
}

// TestREADMEExamplesRunAsWritten runs the README's runnable shell examples,
// in order, as one script in an empty directory, with the courier built
// for the tests on PATH as `courier`: against serve-demo, which they start
// themselves, on a free loopback port instead of 8080.
func TestREADMEExamplesRunAsWritten(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	runs := 0
	for _, b := range readmeShellBlocks(t, string(readme)) {
		if !b.run {
			continue
		}
		runs++
		script.WriteString("# README.md:" + strconv.Itoa(b.line) + "\n" + b.text)
	}
	require.GreaterOrEqual(t, runs, 2, "the fetch and resume examples run")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	text := strings.ReplaceAll(script.String(), "127.0.0.1:8080", addr)

	dir := t.TempDir()
	scriptPath := filepath.Join(t.TempDir(), "readme.sh")
	require.NoError(t, os.WriteFile(scriptPath, []byte(text), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", scriptPath)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + filepath.Dir(courierBin) + ":" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	// Its own process group: what it starts in the background is stopped
	// with it, whatever the script did.
	// Files, not pipes, take its output, so Wait returns when the script
	// ends even if a process it left behind still holds them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	outFile, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	require.NoError(t, err)
	defer outFile.Close()
	errFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	defer errFile.Close()
	cmd.Stdout, cmd.Stderr = outFile, errFile
	require.NoError(t, cmd.Start())
	err = cmd.Wait()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	stdoutBytes, _ := os.ReadFile(outFile.Name())
	stderrBytes, _ := os.ReadFile(errFile.Name())
	stdout := bytes.NewBuffer(stdoutBytes)
	require.NoError(t, err, "the README's examples run as written:\nstdout:\n%s\nstderr:\n%s", stdoutBytes, stderrBytes)

	// The fetch example's lines: each answered with a 2xx, the upload's too.
	var got []outLine
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "{") {
			var l outLine
			require.NoError(t, json.Unmarshal(sc.Bytes(), &l), sc.Text())
			got = append(got, l)
		}
	}
	require.Len(t, got, 5, "one output line per request of reqs.txt")
	for _, l := range got {
		assert.Nil(t, l.Error, "line %d", l.Line)
		assert.True(t, l.Status >= 200 && l.Status < 300, "line %d: status %d", l.Line, l.Status)
	}
	assert.Equal(t, "/upload", got[4].Path)
	// The resume example: its second run found everything answered.
	requireWholeBatchLines(t, filepath.Join(dir, "results.jsonl"), []int{1, 2, 4, 5, 6})

	// Whatever the examples leave in the directory, a clone's .gitignore
	// keeps out of a commit: tokens.json holds a live session.
	ignore, err := os.ReadFile("../../.gitignore")
	require.NoError(t, err)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.True(t, gitignored(string(ignore), e.Name()), ".gitignore covers %s, which the README's examples create", e.Name())
	}
}

// requireWholeBatchLines checks that the output file at p answers exactly
// the input lines want, in order, each without an error.
func requireWholeBatchLines(t *testing.T, p string, want []int) {
	t.Helper()
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	out := parseOutput(t, string(data))
	var lines []int
	for _, l := range out {
		lines = append(lines, l.Line)
		assert.Nil(t, l.Error, "line %d", l.Line)
	}
	assert.Equal(t, want, lines)
}

// gitignored reports whether a file at the root of the repository is
// matched by one of ignore's patterns (comments and blank lines aside).
func gitignored(ignore, name string) bool {
	for _, p := range strings.Split(ignore, "\n") {
		p = strings.TrimSpace(p)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if ok, _ := path.Match(strings.TrimPrefix(p, "/"), name); ok {
			return true
		}
	}
	return false
}
