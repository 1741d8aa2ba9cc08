package couriertest

import (
	"net/http/httptest"
)

// Server is an [API] served on a loopback port, as [httptest.Server]
// serves a handler: point a client at URL, make it work, assert on
// [API.Stats]. Its methods are safe for concurrent use; Close stops it.
// The zero Server is not usable: make one with [NewServer].
type Server struct {
	*API
	// URL is the base URL of the API, http://127.0.0.1:port, without a
	// trailing slash.
	URL string

	srv *httptest.Server
}

// NewServer starts the API configured by opts on a loopback port. The
// caller must Close it (t.Cleanup(srv.Close)).
func NewServer(opts ...Option) *Server {
	api := NewAPI(opts...)
	srv := httptest.NewServer(api)
	return &Server{API: api, URL: srv.URL, srv: srv}
}

// Close shuts the server down and blocks until every request it was
// serving has finished. It may be called more than once.
func (s *Server) Close() { s.srv.Close() }

// CloseClientConnections closes every connection open to the server, as
// a network failure would.
func (s *Server) CloseClientConnections() { s.srv.CloseClientConnections() }
