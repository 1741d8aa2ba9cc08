package engine_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// TestTrySubmitFindsRoomInAnIdleEngineAfterSubmitsWaited pins a place the
// dispatcher kept for a Submit waiting for room after that Submit had been
// admitted: many callers race for a one-place queue, so many of them wait,
// and once every request is answered the engine is idle, its queue empty.
// TrySubmit must then be admitted, not refused with ErrQueueFull.
func TestTrySubmitFindsRoomInAnIdleEngineAfterSubmitsWaited(t *testing.T) {
	const callers, each = 8, 40
	client := &http.Client{Transport: engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	})}
	e := newEngine(t, engine.Config{BaseURL: "http://api.test", HTTPClient: client, Workers: 2, QueueSize: 1})
	ctx := ctxTimeout(t, 30*time.Second)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range each {
				_, err := e.Do(ctx, requests.New("GET", "/x"))
				require.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.Zero(t, e.Stats().Queued)
	for i := range 3 {
		f, err := e.TrySubmit(context.Background(), requests.New("GET", "/idle"))
		require.NoError(t, err, "TrySubmit %d into the empty queue of an idle engine", i)
		_, err = f.Await(ctx)
		require.NoError(t, err)
	}
}
