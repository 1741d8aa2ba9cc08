package engine_test

import (
	"io"
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

// attemptsOf returns the Attempts an error reports, and whether it reports
// any, as a caller (the CLI's "attempts") reads it.
func attemptsOf(err error) (int, bool) {
	var he *errors.HTTPError
	var re *errors.RequestError
	switch {
	case errors.As(err, &he):
		return he.Attempts, true
	case errors.As(err, &re):
		return re.Attempts, true
	}
	return 0, false
}

// A request that was sent, rejected with 401 and parked used to fail with
// a bare ErrRefreshFailed or ErrSessionExpired: no attempts at all (the CLI
// printed 0), though one attempt had reached the server. And a request
// replayed after a refresh and then retried reported more attempts than
// MaxAttempts with no word on why. Attempts count every attempt that
// reached the transport, replays included.
func TestAttemptsCountEverySentAttempt(t *testing.T) {
	t.Run("parked, then the refresh fails", func(t *testing.T) {
		srv := newAuthServer(t, nil)
		srv.refreshStatus = func(int64) int { return http.StatusServiceUnavailable }
		e := newEngine(t, authConfig(srv))
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		require.ErrorIs(t, err, errors.ErrRefreshFailed)
		n, ok := attemptsOf(err)
		require.True(t, ok, "the error says how many attempts were sent: %v", err)
		assert.Equal(t, 1, n)
	})

	t.Run("parked, then the session expires", func(t *testing.T) {
		srv := newAuthServer(t, nil)
		srv.refreshStatus = func(int64) int { return http.StatusBadRequest }
		e := newEngine(t, authConfig(srv))
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		require.ErrorIs(t, err, errors.ErrSessionExpired)
		n, ok := attemptsOf(err)
		require.True(t, ok, "the error says how many attempts were sent: %v", err)
		assert.Equal(t, 1, n)
	})

	t.Run("a replay and then retries", func(t *testing.T) {
		var sent atomic.Int64
		srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		})
		inner := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/refresh" {
				sent.Add(1)
			}
			inner.ServeHTTP(w, r)
		})
		cfg := authConfig(srv)
		cfg.Retry.MaxAttempts = 3
		e := newEngine(t, cfg)
		_, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		var he *errors.HTTPError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, 503, he.Status)
		// The 401, its replay with the new token, and two retries: the
		// replay does not use up MaxAttempts.
		assert.EqualValues(t, 4, sent.Load())
		assert.Equal(t, int(sent.Load()), he.Attempts, "attempts match what the server saw")
	})

	t.Run("a success after a replay", func(t *testing.T) {
		srv := newAuthServer(t, nil)
		e := newEngine(t, authConfig(srv))
		resp, err := e.Get(ctxTimeout(t, 5*time.Second), "/x")
		require.NoError(t, err)
		assert.Equal(t, 2, resp.Attempts)
	})

	t.Run("never sent", func(t *testing.T) {
		var sent atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { sent.Add(1) }))
		defer srv.Close()
		e := newEngine(t, engine.Config{BaseURL: srv.URL})
		_, err := e.Do(ctxTimeout(t, 5*time.Second), requests.New("PUT", "/x", requests.WithBody(unopenable{})))
		require.Error(t, err)
		n, ok := attemptsOf(err)
		require.True(t, ok)
		assert.Zero(t, n, "the body could not be opened: nothing reached the server")
		assert.Zero(t, sent.Load())
	})
}

// unopenable is a body whose Open always fails.
type unopenable struct{}

func (unopenable) Open() (io.ReadCloser, error) { return nil, errors.New("disk gone") }
func (unopenable) ContentType() string          { return "" }
func (unopenable) Size() int64                  { return -1 }
