package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The bench server runs in its own process, so client and server do not
// share a Go runtime (its scheduler, its GC); they do share the machine's
// two cores, as they would on any small host.

const serveEnv = "COURIER_BENCH_SERVE"

// benchServer is the API the clients hit.
type benchServer struct {
	mu       sync.Mutex // protects token
	token    string     // the one valid access token
	gen      int
	refresh  atomic.Int64
	dedup    atomic.Int64
	uploaded atomic.Int64
}

func (s *benchServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/item":
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":42,"name":"widget","price":9.99,"tags":["a","b","c"]}`))
	case "/auth/item": // only the current token works
		s.mu.Lock()
		ok := r.Header.Get("Authorization") == "Bearer "+s.token
		s.mu.Unlock()
		if !ok {
			w.WriteHeader(401)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	case "/auth/expire": // a new token is now required
		s.mu.Lock()
		s.gen++
		s.token = "t" + strconv.Itoa(s.gen) + "-expired-on-purpose"
		s.mu.Unlock()
	case "/auth/refresh":
		s.refresh.Add(1)
		time.Sleep(5 * time.Millisecond) // a refresh endpoint is rarely fast
		s.mu.Lock()
		s.gen++
		s.token = "t" + strconv.Itoa(s.gen)
		tok := s.token
		s.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "refresh_token": "r" + tok, "expires_in": 3600})
	case "/dedup": // slow enough for identical requests to pile up
		s.dedup.Add(1)
		time.Sleep(50 * time.Millisecond)
		w.Write([]byte(`{"ok":true}`))
	case "/upload":
		n, _ := io.Copy(io.Discard, r.Body)
		s.uploaded.Add(n)
	case "/stats":
		json.NewEncoder(w).Encode(map[string]int64{"refresh": s.refresh.Load(), "dedup": s.dedup.Load(), "uploaded": s.uploaded.Load()})
	case "/reset":
		s.refresh.Store(0)
		s.dedup.Store(0)
		s.uploaded.Store(0)
	default:
		http.NotFound(w, r)
	}
}

// serve is the child process: it serves until its stdin closes.
func serve() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening", ln.Addr().String())
	srv := &http.Server{Handler: &benchServer{token: "t0"}, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

// child is the server process seen from the bench program.
type child struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	base string
}

func startServer() (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("bench server: %w", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	return &child{cmd: cmd, in: in, base: "http://" + addr}, nil
}

func (c *child) stop() {
	c.in.Close()
	c.cmd.Wait()
}

// stats reads the server's counters.
func (c *child) stats() map[string]int64 {
	resp, err := http.Get(c.base + "/stats")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var m map[string]int64
	json.NewDecoder(resp.Body).Decode(&m)
	return m
}

func (c *child) call(path string) {
	resp, err := http.Get(c.base + path)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
