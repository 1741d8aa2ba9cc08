// Package faultserver is a loopback HTTP/1.1 server that misbehaves on
// purpose, at the byte level, for courier's fault-injection tests: it
// resets connections mid-body, closes them before answering, sends bodies
// slowly or shorter than their Content-Length, never answers, answers late
// with jitter, closes keep-alive connections between requests, and sends
// garbage status lines. It counts what reached it, and which POSTs it
// applied (once per Idempotency-Key), so tests can prove nothing was
// applied twice.
//
// The fault is chosen by the path: /{fault}/{anything}?fail=N&bps=B&ms=M&jitter=J.
// With fail=N only the first N requests for that method and path are
// faulty and later ones succeed; without it every one is.
package faultserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Faults, by the first path segment.
const (
	OK                  = "ok"                    // a normal 200 answer
	ResetMidBody        = "reset-mid-body"        // headers and part of the body, then RST
	CloseBeforeResponse = "close-before-response" // the request is read, then FIN with no answer
	SlowBody            = "slow-body"             // the body at bps bytes per second (default 100)
	Blackhole           = "blackhole"             // the request is read, then nothing, ever
	Latency             = "latency"               // a normal answer after ms (default 20) +- jitter ms
	Truncated           = "truncated"             // Content-Length 100, 50 bytes, then FIN
	CloseAfterResponse  = "close-after-response"  // a normal keep-alive answer, then the server closes the connection
	GarbageStatus       = "garbage-status"        // a status line that is not HTTP
)

// Faults lists every fault, for tables.
var Faults = []string{OK, ResetMidBody, CloseBeforeResponse, SlowBody, Blackhole, Latency, Truncated, CloseAfterResponse, GarbageStatus}

// Server is a running fault server. It is safe for concurrent use.
type Server struct {
	URL string

	ln     net.Listener
	ctx    context.Context // cancelled by Close: blackholes and slow bodies end
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and one per connection

	mu       sync.Mutex // protects the fields below
	conns    map[net.Conn]struct{}
	received map[string]int // "METHOD /path" -> requests read in full
	applied  map[string]int // "/path" -> POSTs applied
	keys     map[string]bool
}

// Start listens on a loopback port and serves until Close.
func Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{URL: "http://" + ln.Addr().String(), ln: ln, ctx: ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{}, received: map[string]int{}, applied: map[string]int{}, keys: map[string]bool{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// RefusedURL returns the URL of a loopback port where nothing listens.
func RefusedURL() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr, nil
}

// Close stops the server, closes every connection and waits for them.
func (s *Server) Close() {
	s.cancel()
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Received returns how many requests for method and path were read in full.
func (s *Server) Received(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received[method+" "+path]
}

// Applied returns how many POSTs to path took effect: every one without an
// Idempotency-Key, and the first of each key.
func (s *Server) Applied(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied[path]
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// serve answers the requests of one connection until a fault ends it.
func (s *Server) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		n := s.count(req)
		fault, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")
		q := req.URL.Query()
		if fail, err := strconv.Atoi(q.Get("fail")); err == nil && n > fail {
			fault = OK
		}
		if !s.answer(c, fault, q) {
			return
		}
	}
}

// count records a request read in full and returns how many requests for
// its method and path came so far, this one included.
func (s *Server) count(req *http.Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := req.Method + " " + req.URL.Path
	s.received[k]++
	if req.Method == http.MethodPost {
		key := req.Header.Get("Idempotency-Key")
		if key == "" || !s.keys[key] {
			s.applied[req.URL.Path]++
		}
		if key != "" {
			s.keys[key] = true
		}
	}
	return s.received[k]
}

const okBody = `{"ok":true,"padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`

func writeOK(c net.Conn) error {
	_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(okBody), okBody)
	return err
}

// answer acts out fault on c and reports whether the connection goes on.
func (s *Server) answer(c net.Conn, fault string, q map[string][]string) bool {
	get := func(k string, def int) int {
		if v, ok := q[k]; ok {
			if n, err := strconv.Atoi(v[0]); err == nil {
				return n
			}
		}
		return def
	}
	switch fault {
	case ResetMidBody:
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("x", 100))
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, not FIN
		}
		return false
	case CloseBeforeResponse:
		return false
	case SlowBody:
		bps := max(get("bps", 100), 1)
		const size = 1000
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		chunk := max(bps/20, 1) // 20 writes a second
		for sent := 0; sent < size; sent += chunk {
			if _, err := c.Write([]byte(strings.Repeat("y", min(chunk, size-sent)))); err != nil {
				return false
			}
			select {
			case <-time.After(time.Second / 20):
			case <-s.ctx.Done():
				return false
			}
		}
		return true
	case Blackhole:
		// Wait until the client hangs up or the server closes.
		done := make(chan struct{})
		go func() {
			io.Copy(io.Discard, c)
			close(done)
		}()
		select {
		case <-done:
		case <-s.ctx.Done():
			c.Close()
			<-done
		}
		return false
	case Latency:
		ms, jitter := get("ms", 20), get("jitter", 0)
		d := time.Duration(ms) * time.Millisecond
		if jitter > 0 {
			d += time.Duration(rand.IntN(2*jitter+1)-jitter) * time.Millisecond
		}
		select {
		case <-time.After(max(d, 0)):
		case <-s.ctx.Done():
			return false
		}
		return writeOK(c) == nil
	case Truncated:
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n%s", strings.Repeat("z", 50))
		return false
	case CloseAfterResponse:
		writeOK(c)
		return false // the server closes a connection the client keeps in its pool
	case GarbageStatus:
		fmt.Fprintf(c, "HTTP/1.1 abc nonsense\r\n\r\n")
		return false
	default:
		return writeOK(c) == nil
	}
}
