package engine_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// TestCallerLeavingAsTheWorkerResolvesIsNotADoubleResolve pins a race
// between a worker resolving the first waiter of a 2xx answer and the
// dispatcher making that waiter leave because its context ended at the
// same moment: whichever wins resolves the future, once, and the loser
// stands aside without counting a second resolution.
func TestCallerLeavingAsTheWorkerResolvesIsNotADoubleResolve(t *testing.T) {
	api := engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: 2,
			Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
	})
	e := newEngine(t, engine.Config{BaseURL: "http://api.test", Workers: 4,
		HTTPClient: &http.Client{Transport: api}})
	before := engine.DoubleResolves()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				ctx, cancel := context.WithCancel(context.Background())
				f := e.Submit(ctx, requests.New("GET", "/x", requests.WithQuery("id", fmt.Sprint(g, "-", i))))
				if i%2 == 0 {
					cancel() // leave while the answer may be arriving
				}
				<-f.Done()
				resp, err := f.Await(context.Background())
				if err == nil {
					assert.Equal(t, 200, resp.Status)
				} else {
					assert.ErrorIs(t, err, context.Canceled)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, before, engine.DoubleResolves(), "a future was resolved twice")
}
