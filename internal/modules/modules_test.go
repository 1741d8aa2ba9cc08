package modules_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// raceEnabled is set when this test runs under -race, so the nested
// modules' tests run under it too.
var raceEnabled bool

// nested are the modules below the root that ./... does not reach.
var nested = []string{"cmd/courier", "bench"}

// repoRoot is the repository's root: two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.work"))
	require.NoError(t, err, "the repository root has no go.work")
	return root
}

func goBin(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("go command not on PATH: in CI the nested modules must be tested")
		}
		t.Skip("go command not on PATH")
	}
	return bin
}

// readTree opens every file of a module's tree, so that go test's cache,
// which keys this test's result on the files it opened, runs it again when
// any of them changes.
func readTree(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != dir {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" {
			_, err := os.ReadFile(path)
			return err
		}
		return nil
	})
	require.NoError(t, err)
}

// TestNestedModules runs the tests of the command's and the benchmarks'
// modules, with the flags this test runs under (-race, -short), so that
// `go test -race ./...` from the root tests the whole repository.
func TestNestedModules(t *testing.T) {
	root := repoRoot(t)
	bin := goBin(t)
	for _, mod := range nested {
		t.Run(strings.ReplaceAll(mod, "/", "_"), func(t *testing.T) {
			dir := filepath.Join(root, mod)
			readTree(t, dir)
			readTree(t, filepath.Join(root, "internal"))
			args := []string{"test", "-count=1"}
			if raceEnabled {
				args = append(args, "-race")
			}
			if testing.Short() {
				args = append(args, "-short")
			}
			timeout := 9 * time.Minute
			if dl, ok := t.Deadline(); ok {
				timeout = time.Until(dl) - 15*time.Second
			}
			args = append(args, "-timeout", timeout.Round(time.Second).String(), "./...")
			ctx, cancel := context.WithTimeout(t.Context(), timeout+10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = dir
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err != nil {
				t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), mod, err, out.String())
			}
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				t.Log(line)
			}
		})
	}
}

// commandOnly are modules that only the courier command may bring: its
// flag parser, progress bar, terminal handling, and the OpenTelemetry SDK
// and exporters with their gRPC and protobuf.
var commandOnly = []string{
	"github.com/spf13/pflag",
	"github.com/schollz/progressbar",
	"golang.org/x/term",
	"go.opentelemetry.io/otel/sdk",
	"go.opentelemetry.io/otel/exporters",
	"go.opentelemetry.io/proto",
	"google.golang.org/grpc",
	"google.golang.org/protobuf",
	"google.golang.org/genproto",
	"github.com/grpc-ecosystem",
}

func commandModule(path string) bool {
	for _, p := range commandOnly {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// TestLibraryGoModRequiresNoCommandModule reads the library's go.mod: it
// requires what the library's packages and tests import, none of the
// command's modules.
func TestLibraryGoModRequiresNoCommandModule(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	require.NoError(t, err)
	var required []string
	inBlock := false
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "require (":
			inBlock = true
			continue
		case inBlock && line == ")":
			inBlock = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
		case !inBlock:
			continue
		}
		if f := strings.Fields(line); len(f) >= 2 {
			required = append(required, f[0])
		}
	}
	require.NotEmpty(t, required, "found no requirement in go.mod; the check is broken")
	assert.Contains(t, required, "go.opentelemetry.io/otel", "the library uses the OpenTelemetry API")
	for _, m := range required {
		assert.False(t, commandModule(m), "the library's go.mod requires %s, which only the command uses", m)
	}
}

// TestAProgramUsingTheLibraryGetsNoCommandModule builds the module graph of
// a program that imports engine and fleet, as a user's would be: none of
// the command's modules is in it.
func TestAProgramUsingTheLibraryGetsNoCommandModule(t *testing.T) {
	root := repoRoot(t)
	bin := goBin(t)
	dir := t.TempDir()
	gomod := "module example.com/scratch\n\ngo 1.25\n\nrequire github.com/courier-go/courier v0.0.0\n\nreplace github.com/courier-go/courier => " + root + "\n"
	main := `package main

import (
	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/fleet"
)

func main() {
	_, _ = engine.New(engine.Config{BaseURL: "http://127.0.0.1:1"})
	_, _ = fleet.NewClient("redis://127.0.0.1:1")
}
`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(main), 0o644))
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %s: %s", strings.Join(args, " "), out)
		return string(out)
	}
	run("mod", "tidy")
	run("build", "-o", os.DevNull, ".")
	mods := strings.Fields(run("list", "-m", "-f", "{{.Path}}", "all"))
	require.Contains(t, mods, "github.com/redis/go-redis/v9", "the program imports fleet; the graph is not the one meant")
	for _, m := range mods {
		assert.False(t, commandModule(m), "a program importing engine and fleet gets %s in its module graph", m)
	}
	t.Logf("a program importing engine and fleet has %d modules in its graph", len(mods))
}
