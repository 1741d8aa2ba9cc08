package demo

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Running is a demo API listening on a real address.
type Running struct {
	*Server
	URL string // http://host:port
	srv *http.Server
	ln  net.Listener
	err chan error // the Serve result, delivered once

	once     sync.Once
	serveErr error
	conns    sync.WaitGroup // one per connection until it is closed
}

// Start serves a demo API on addr ("127.0.0.1:0" picks a free port) until
// Close or Shutdown.
func Start(addr string, cfg Config) (*Running, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := New(cfg)
	r := &Running{Server: s, URL: "http://" + ln.Addr().String(), ln: ln, err: make(chan error, 1)}
	r.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ConnState: r.track}
	go func() { r.err <- r.srv.Serve(ln) }()
	return r, nil
}

// track counts connections, so that Close and Shutdown return only when
// every connection goroutine has finished.
func (r *Running) track(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		r.conns.Add(1)
	case http.StateHijacked, http.StateClosed:
		r.conns.Done()
	}
}

// Shutdown stops the server gracefully and waits for its goroutine.
func (r *Running) Shutdown(ctx context.Context) error {
	err := r.srv.Shutdown(ctx)
	if serr := r.wait(); !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	r.conns.Wait()
	return err
}

func (r *Running) wait() error {
	r.once.Do(func() { r.serveErr = <-r.err })
	return r.serveErr
}

// Close stops the server at once and waits for its goroutine.
func (r *Running) Close() error {
	err := r.srv.Close()
	r.wait()
	r.conns.Wait()
	return err
}
