package engine_test

import (
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// Failures that can never succeed used to be retried (three attempts, and
// a redirect loop thirty-three requests). They fail at the first attempt,
// with their cause.
func TestFailuresThatCannotSucceedAreNotRetried(t *testing.T) {
	t.Run("TLS verification error", func(t *testing.T) {
		var handshakes atomic.Int64
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				handshakes.Add(1)
			}
		}
		srv.StartTLS()
		defer srv.Close()
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: fastRetry()}) // does not trust the test CA
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		var re *errors.RequestError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 1, re.Attempts)
		var unknownCA x509.UnknownAuthorityError
		assert.ErrorAs(t, err, &unknownCA, "the cause is kept")
		assert.EqualValues(t, 1, handshakes.Load())
		assert.Zero(t, e.Stats().Retries)
	})

	t.Run("invalid header value from the caller", func(t *testing.T) {
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
		defer srv.Close()
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: fastRetry()})
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x", requests.WithHeader("X-Key", "a\x00b"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), `X-Key`, "the error names the header")
		assert.Contains(t, err.Error(), `/x`, "and the request")
		assert.Zero(t, calls.Load(), "refused before it is sent")
	})

	t.Run("invalid header value from a middleware", func(t *testing.T) {
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
		defer srv.Close()
		var attempts atomic.Int64
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: fastRetry(), Middleware: []engine.Middleware{
			func(next http.RoundTripper) http.RoundTripper {
				return engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
					attempts.Add(1)
					r.Header.Set("X-Signature", "line\nbreak")
					return next.RoundTrip(r)
				})
			}}})
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "invalid header field value")
		assert.EqualValues(t, 1, attempts.Load())
		assert.Zero(t, calls.Load())
	})

	t.Run("redirect loop", func(t *testing.T) {
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			http.Redirect(w, r, "/loop", http.StatusFound)
		}))
		defer srv.Close()
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: fastRetry()})
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/loop")
		var re *errors.RequestError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 1, re.Attempts)
		assert.Contains(t, err.Error(), "stopped after 10 redirects")
		assert.EqualValues(t, 10, calls.Load(), "one attempt: the request and nine redirects, the tenth refused")
	})

	t.Run("refresh endpoint answering 404", func(t *testing.T) {
		var refreshCalls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/oauth/tokn" {
				refreshCalls.Add(1)
				http.NotFound(w, r)
				return
			}
			http.Error(w, "expired", http.StatusUnauthorized)
		}))
		defer srv.Close()
		e := newEngine(t, engine.Config{BaseURL: srv.URL, Retry: fastRetry(), Auth: engine.Auth{
			AccessToken: "old", RefreshToken: "rt", Refresh: &engine.RefreshConfig{Path: "/oauth/tokn"}}})
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		require.ErrorIs(t, err, errors.ErrRefreshFailed)
		assert.NotErrorIs(t, err, errors.ErrSessionExpired)
		assert.Contains(t, err.Error(), "404")
		assert.EqualValues(t, 1, refreshCalls.Load(), "not retried")
	})
}
