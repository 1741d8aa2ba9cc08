package couriertest_test

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/couriertest"
	"github.com/courier-go/courier/engine"
)

// virtualEngine is an engine that reaches api in process, for a synctest
// bubble.
func virtualEngine(t *testing.T, api *couriertest.API) *engine.Engine {
	e, err := engine.New(engine.Config{BaseURL: "http://api.test", Auth: api.Auth(),
		HTTPClient: &http.Client{Transport: api.RoundTripper()}})
	require.NoError(t, err)
	return e
}

// advance lets d of the bubble's virtual time pass, then waits until
// every goroutine in the bubble is blocked again; no real time passes.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// The engine waits out a scripted Retry-After, in virtual time, and gets
// the item on the attempt after.
func TestEngineWaitsOutAScriptedRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := couriertest.NewAPI(couriertest.WithFaults("/items/1", couriertest.Unavailable(30*time.Second)))
		e := virtualEngine(t, api)
		defer e.Close()
		start := time.Now()
		resp, err := e.Get(context.Background(), "/items/1")
		require.NoError(t, err)
		assert.Equal(t, 2, resp.Attempts)
		assert.GreaterOrEqual(t, time.Since(start), 30*time.Second)
		assert.Less(t, time.Since(start), 31*time.Second)
		assert.EqualValues(t, 1, api.Stats().Faults)
	})
}

// A token with a lifetime announces it; the engine refreshes ahead of its
// expiry and no request meets a 401, however long the run.
func TestEngineRefreshesAheadOfTheTokensLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := couriertest.NewAPI(couriertest.WithTokenTTL(time.Minute))
		e := virtualEngine(t, api)
		defer e.Close()
		for range 10 {
			_, err := e.Get(context.Background(), "/items/1")
			require.NoError(t, err)
			advance(25 * time.Second)
		}
		st := api.Stats()
		assert.Zero(t, st.Unauthorized)
		assert.GreaterOrEqual(t, st.Refreshes, int64(3), "250 s of one-minute tokens")
	})
}

// A reset reaches the engine as a connection error, which it retries.
func TestInProcessResetIsAConnectionError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := couriertest.NewAPI(couriertest.WithFaults("/items/1", couriertest.Reset()))
		e := virtualEngine(t, api)
		defer e.Close()
		resp, err := e.Get(context.Background(), "/items/1")
		require.NoError(t, err)
		assert.Equal(t, 2, resp.Attempts)
		assert.EqualValues(t, 1, api.Stats().Resets)
	})
}

// A slow body takes the time it was given, in four pieces.
func TestSlowBodyTakesItsTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := couriertest.NewAPI(couriertest.WithFaults("/items/1", couriertest.SlowBody(8*time.Second)))
		c := &http.Client{Transport: api.RoundTripper()}
		req, _ := http.NewRequest("GET", "http://api.test/items/1", nil)
		req.Header.Set("Authorization", "Bearer "+api.Tokens().AccessToken)
		start := time.Now()
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, 8*time.Second, time.Since(start))
	})
}
