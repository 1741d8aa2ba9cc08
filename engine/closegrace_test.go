package engine_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// A refresh that hung used to hold Close for the whole request timeout
// (30 s by default), silently. Close now waits at most Auth.CloseGrace
// (2 s by default), then abandons the refresh with a warning; a refresh
// answered within the grace is stored.
func TestCloseWaitsForAHangingRefreshAtMostTheGrace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		answer time.Duration // when the refresh is answered; 0: never
		want   time.Duration // how long Close takes
		stored string        // the refresh token in the store afterwards
	}{
		{"default grace, hanging", 0, 0, engine.DefaultCloseGrace, "refresh-1"},
		{"grace 5s, hanging", 5 * time.Second, 0, 5 * time.Second, "refresh-1"},
		{"no grace", -1, 0, 0, "refresh-1"},
		{"answered within the grace", 5 * time.Second, time.Second, time.Second, "refresh-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				api := newTokenAPI()
				gate := make(chan struct{})
				api.set(func(a *tokenAPI) { a.gate = gate })
				store := engine.NewMemoryStore()
				var logs syncBuffer
				log := zerolog.New(&logs)
				cfg := tokenConfig(api)
				cfg.Timeout = time.Minute // the refresh call's own bound, far off
				cfg.Auth.Store, cfg.Auth.CloseGrace, cfg.Logger = store, tc.grace, &log
				e, err := engine.New(cfg)
				require.NoError(t, err)
				f := e.Submit(context.Background(), requests.New("GET", "/x"))
				synctest.Wait() // parked; the refresh is at the server
				require.Equal(t, 1, api.refreshCalls())
				if tc.answer > 0 {
					time.AfterFunc(tc.answer, func() { close(gate) })
				}
				start := time.Now()
				require.NoError(t, e.Close())
				assert.Equal(t, tc.want, time.Since(start), "how long Close waited")
				_, err = f.Await(context.Background())
				assert.Error(t, err, "the parked request ends with Close")
				assert.Equal(t, tc.stored, stored(t, store).RefreshToken)
				if tc.answer == 0 {
					assert.Contains(t, logs.String(), "abandoning the token refresh in flight")
					assert.Contains(t, logs.String(), "may be lost")
				} else {
					assert.NotContains(t, logs.String(), "abandoning")
				}
			})
		})
	}
}

// Shutdown waits for a refresh in flight until its ctx ends, and the
// Close after it still grants the grace.
func TestShutdownWaitsForTheRefreshUntilItsContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newTokenAPI()
		gate := make(chan struct{})
		api.set(func(a *tokenAPI) { a.gate = gate })
		store := engine.NewMemoryStore()
		cfg := tokenConfig(api)
		cfg.Timeout = time.Minute
		cfg.Auth.Store = store
		e, err := engine.New(cfg)
		require.NoError(t, err)
		f := e.Submit(context.Background(), requests.New("GET", "/x"))
		synctest.Wait()

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		assert.ErrorIs(t, e.Shutdown(ctx), context.DeadlineExceeded)
		assert.Equal(t, 10*time.Second, time.Since(start), "Shutdown waited until its ctx ended")

		time.AfterFunc(time.Second, func() { close(gate) })
		start = time.Now()
		require.NoError(t, e.Close())
		assert.Equal(t, time.Second, time.Since(start), "Close waited for the answer, within its grace")
		assert.Equal(t, "refresh-2", stored(t, store).RefreshToken, "the rotated token was stored")
		resp, err := f.Await(context.Background())
		if err == nil {
			assert.Equal(t, 200, resp.Status)
		}
	})
}
