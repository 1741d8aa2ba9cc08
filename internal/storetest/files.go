package storetest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// ReadOnlyDir makes dir a directory nobody can create a file in, until
// the test ends: mode 0500, or, for root (whom modes do not stop), the
// immutable attribute. The test is skipped where neither works.
func ReadOnlyDir(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() == 0 {
		chattr(t, dir)
	} else {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Skipf("cannot make %s read-only: %v", dir, err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
	}
	probe := filepath.Join(dir, ".probe")
	if f, err := os.Create(probe); err == nil {
		f.Close()
		os.Remove(probe)
		t.Skipf("%s is still writable here", dir)
	}
}

// Immutable makes the file at path impossible to replace or remove until
// the test ends, while its directory stays writable: a temporary file
// beside it is created, but renaming it over path fails. It needs root
// (the immutable attribute); elsewhere the test is skipped.
func Immutable(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making a file immutable needs root")
	}
	chattr(t, path)
	probe := path + ".probe"
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatalf("the directory of %s must stay writable: %v", path, err)
	}
	defer os.Remove(probe)
	if err := os.Rename(probe, path); err == nil {
		t.Skipf("%s can still be replaced here", path)
	}
}

// chattr sets the immutable attribute on path and clears it when the test
// ends; it skips the test when chattr is missing or refused.
func chattr(t *testing.T, path string) {
	t.Helper()
	bin, err := exec.LookPath("chattr")
	if err != nil {
		t.Skip("chattr is not installed")
	}
	if out, err := exec.Command(bin, "+i", path).CombinedOutput(); err != nil {
		t.Skipf("chattr +i %s: %v: %s", path, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "-i", path).CombinedOutput(); err != nil {
			t.Errorf("chattr -i %s: %v: %s", path, err, out)
		}
	})
}

// HoldFlock has another process hold an exclusive flock on path (created
// if missing) until the returned func is called or the test ends, as a
// second courier stopped mid-refresh would. It uses flock(1), and skips
// the test where that is not installed.
func HoldFlock(t *testing.T, path string) (release func()) {
	t.Helper()
	bin, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("flock(1) is not installed")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	// flock holds the lock while cat runs, until cat's stdin closes; -o
	// keeps the lock's descriptor from cat.
	cmd := exec.Command(bin, "-o", path, "-c", "echo locked; exec cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			stdin.Close()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(release)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "locked\n" {
		release()
		t.Fatalf("flock(1) did not take the lock on %s: %q, %v", path, line, err)
	}
	return release
}
