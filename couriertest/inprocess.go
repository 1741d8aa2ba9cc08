package couriertest

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
)

// RoundTripper returns a RoundTripper that serves each request with the
// API in process, on the caller's goroutine, without a network: for tests
// inside a testing/synctest bubble, where sockets are not durably
// blocking, so that Retry-After waits, token lifetimes and slow bodies
// take virtual time. Any scheme and host reach the API. A [Reset] comes
// back as a connection-reset error, as from a socket; a slow body has
// been waited for before the answer returns. It is safe for concurrent
// use.
func (a *API) RoundTripper() http.RoundTripper { return inProcess{a} }

type inProcess struct{ api *API }

func (p inProcess) RoundTrip(r *http.Request) (resp *http.Response, err error) {
	var body []byte
	if r.Body != nil {
		body, err = io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	sr := r.Clone(r.Context())
	sr.Body = io.NopCloser(bytes.NewReader(body))
	sr.ContentLength = int64(len(body))
	sr.RequestURI = r.URL.RequestURI()
	sr.RemoteAddr = "192.0.2.1:1234"
	if sr.Host == "" {
		sr.Host = r.URL.Host
	}
	rec := httptest.NewRecorder()
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			// What a reset connection looks like to a client.
			resp, err = nil, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
		}
	}()
	p.api.ServeHTTP(rec, sr)
	resp = rec.Result()
	resp.Request = r
	return resp, nil
}
