package engine_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// gateClock is the system clock, except that the one call to Now after
// arm waits until the gate opens: it holds whoever calls it, here the
// dispatcher, busy.
type gateClock struct {
	engine.Clock
	armed atomic.Pointer[chan struct{}]
}

func (c *gateClock) arm() chan struct{} {
	ch := make(chan struct{})
	c.armed.Store(&ch)
	return ch
}

func (c *gateClock) Now() time.Time {
	if ch := c.armed.Swap(nil); ch != nil {
		<-*ch
	}
	return c.Clock.Now()
}

// gatedBody is a request body whose Open waits until open is closed.
type gatedBody struct{ open chan struct{} }

func (b gatedBody) Open() (io.ReadCloser, error) {
	<-b.open
	return io.NopCloser(strings.NewReader("x")), nil
}
func (gatedBody) ContentType() string { return "text/plain" }
func (gatedBody) Size() int64         { return 1 }

// TestTerminateSessionSendsNothingWithoutTheToken pins the order of a
// logout: the dispatcher fails and cancels what is pending before the
// token is cleared, so an attempt already handed to a worker goes out with
// the old token or not at all, never without one, even while the
// dispatcher is busy when TerminateSession is called.
func TestTerminateSessionSendsNothingWithoutTheToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var unauthenticated atomic.Int64
		clock := &gateClock{Clock: engine.SystemClock}
		e := virtualEngine(t, engine.Config{
			Workers: 1, Clock: clock, Retry: engine.Retry{MaxAttempts: 1},
			Auth: engine.Auth{AccessToken: "t0"},
			HTTPClient: inProcess(func(r *http.Request) (*http.Response, error) {
				if r.Header.Get("Authorization") == "" && r.Context().Err() == nil {
					unauthenticated.Add(1)
				}
				return answer(r, 200, "ok"), nil
			}),
		})
		ctx := context.Background()
		open := make(chan struct{})
		req := requests.New("PUT", "/x")
		req.Body = gatedBody{open}
		x := e.Submit(ctx, req)
		synctest.Wait() // x's worker builds its request
		busy := clock.arm()
		y := e.Submit(ctx, requests.New("GET", "/y"))
		synctest.Wait() // the dispatcher is busy admitting y
		terminated := make(chan struct{})
		go func() {
			e.TerminateSession()
			close(terminated)
		}()
		synctest.Wait()
		close(open) // x's attempt goes on
		synctest.Wait()
		close(busy)
		<-terminated
		_, err := y.Await(ctx)
		assert.ErrorIs(t, err, errors.ErrSessionExpired)
		_, err = x.Await(ctx) // sent with the old token, or failed: either is fine
		_ = err
		require.Zero(t, unauthenticated.Load(), "a request went out without the token while the session was being ended")
	})
}
