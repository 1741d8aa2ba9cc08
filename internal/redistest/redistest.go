// Package redistest starts a private redis-server for one test.
//
// Each [Server] is a redis-server process of its own, listening only on a
// unix socket in a fresh temporary directory (no TCP port), so tests never
// share state with each other or with a Redis the machine may run. It is
// stopped, and its directory removed, when the test ends.
//
// When the redis-server binary is not on PATH, [Start] skips the test, unless
// the CI environment variable is set, in which case the test fails: CI must
// run the fleet tests against a real Redis, never skip them quietly.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options tunes the server. The zero value gives a server that keeps
// nothing on disk (--save "", no append-only file).
type Options struct {
	// AppendOnly turns on the append-only file (appendonly yes, fsync on
	// every write) in the server's directory, so that what was written
	// survives [Server.Restart] and [Server.Kill].
	AppendOnly bool
	// Password, if set, is required from clients (requirepass).
	Password string
	// Args are extra redis-server arguments, such as "--maxmemory", "1mb".
	Args []string
}

// Server is one private redis-server process. Its methods are safe for
// concurrent use; the zero value is not usable, call [Start].
type Server struct {
	t      testing.TB
	bin    string
	dir    string // the server's working directory; holds the socket and any AOF
	socket string
	args   []string

	mu   sync.Mutex // protects cmd, done and log
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *bytes.Buffer // the current process's output
}

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 10 * time.Second

// Binary returns the path of redis-server, or "" when it is not on PATH.
func Binary() string {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return ""
	}
	return p
}

// InCI reports whether the CI environment variable is set (to anything but
// "", "0" or "false").
func InCI() bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv("CI")))
	return v != "" && v != "0" && v != "false"
}

// Require skips the test when redis-server is missing and CI is unset, and
// fails it when redis-server is missing in CI. It returns the binary's path.
func Require(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if InCI() {
			t.Fatal("redis-server is not on PATH, and CI is set: fleet tests must run against a real Redis (.ci/run installs it)")
		}
		t.Skip("redis-server is not on PATH (install the redis-server package to run the fleet tests)")
	}
	return bin
}

// Start starts a private redis-server and waits until it answers PING. The
// server is stopped and its directory removed when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Require(t)
	// A short directory of our own: a unix socket path must fit in 108
	// bytes, and t.TempDir's paths grow with the test's name.
	dir, err := os.MkdirTemp("", "redistest")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s := &Server{t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "redis.sock")}
	s.args = []string{
		"--port", "0",
		"--unixsocket", s.socket,
		"--unixsocketperm", "700",
		"--dir", dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", "",
		"--databases", "1",
	}
	if opts.AppendOnly {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
	if opts.Password != "" {
		s.args = append(s.args, "--requirepass", opts.Password)
	}
	s.args = append(s.args, opts.Args...)
	t.Cleanup(func() {
		s.Stop()
		os.RemoveAll(dir)
	})
	s.Restart()
	return s
}

// Socket returns the path of the server's unix socket.
func (s *Server) Socket() string { return s.socket }

// URL returns the server's address as a unix:// URL.
func (s *Server) URL() string { return "unix://" + s.socket }

// Dir returns the server's working directory (where an append-only file
// lives).
func (s *Server) Dir() string { return s.dir }

// Running reports whether the server process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Restart starts the server again after [Server.Stop] or [Server.Kill], on
// the same socket and directory, and waits until it answers PING. With
// [Options.AppendOnly], what was written before is there again. Restart of a
// running server stops it first.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.mu.Lock()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	log := new(bytes.Buffer)
	w := &lockedWriter{mu: &s.mu, b: log}
	cmd.Stdout, cmd.Stderr = w, w
	// Its own process group, so a signal to the test's group (^C) does
	// not reach it before the cleanup does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	done := make(chan struct{})
	s.cmd, s.done, s.log = cmd, done, log
	s.mu.Unlock()
	go func() {
		cmd.Wait() // the exit status is in the log; Stop and Kill expect non-zero
		close(done)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(s.socket)
		if err == nil {
			return
		}
		select {
		case <-done:
			s.t.Fatalf("redistest: redis-server exited before answering PING:\n%s", s.Log())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("redistest: redis-server did not answer PING within %v (%v):\n%s", startTimeout, err, s.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Stop shuts the server down with SIGTERM (which, with AppendOnly, flushes
// the append-only file) and waits for it to exit. Stopping a stopped server
// does nothing.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill stops the server with SIGKILL, as a crash would, and waits for it
// to exit. Killing a stopped server does nothing.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(startTimeout):
		cmd.Process.Kill()
		<-done
	}
}

// Log returns what the current (or last) server process wrote.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// ping sends PING on the socket in the inline protocol and expects +PONG
// (or -NOAUTH, which also says the server is up and serving).
func ping(socket string) error {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimSpace(line)
	if line == "+PONG" || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("PING answered %q", line)
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
