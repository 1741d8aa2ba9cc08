package main

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/internal/redistest"
)

func TestFleetSessionRefresherKilledWhileItsRefreshIsHeld(t *testing.T) {
	// The process that holds the fleet's refresh lock is killed (kill -9)
	// while the server holds its refresh open, before the refresh token is
	// spent, so its lock is never released. With a 1s lock lease another
	// process takes the lock once the lease lapses and completes the
	// refresh: every line of the survivors is ok and no refresh token is
	// used twice.
	const procs, perProc, uses = 3, 300, 200
	rdb := redistest.Start(t, redistest.Options{})
	api := startFleetAPI(t, procs, demo.Config{AccessUses: uses})
	var (
		holding atomic.Bool
		held    = make(chan int, 1)
		release = make(chan struct{})
	)
	// Registered after the servers: it runs before they close.
	t.Cleanup(func() { close(release) })
	api.holdRefresh = func(i int, r *http.Request) bool {
		if !holding.CompareAndSwap(false, true) {
			return false
		}
		held <- i
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	}
	tk := api.Login()
	var ps []*fleetProc
	for i, in := range inputFiles(t, procs, perProc, "/items") {
		ps = append(ps, fleetFetch(t, api, i, rdb.URL(), tk, in, "--lock-lease", "1s"))
	}

	deadline := time.Now().Add(20 * time.Second)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting for %s", what)
			}
			<-time.After(5 * time.Millisecond)
		}
	}
	var victim int
	waitFor("the first refresh", func() bool {
		select {
		case victim = <-held:
			return true
		default:
			return false
		}
	})
	killed := time.Now()
	require.NoError(t, ps[victim].cmd.Process.Kill())
	waitFor("the killed process to exit", func() bool {
		select {
		case <-ps[victim].done:
			return true
		default:
			return false
		}
	})

	// Another process completes a refresh once the lease has lapsed:
	// within a few leases, well before the default lease of 15s (renewed
	// every 5s) could have lapsed.
	deadline = killed.Add(8 * time.Second)
	waitFor("a refresh by another process", func() bool {
		return api.refreshesBetween(killed, time.Now()) > 0 && api.Stats().Refreshes > 0
	})
	deadline = time.Now().Add(20 * time.Second)
	for i, p := range ps {
		if i == victim {
			continue
		}
		waitFor("the surviving processes to finish", func() bool {
			select {
			case <-p.done:
				return true
			default:
				return false
			}
		})
		requireAllOK(t, p, perProc)
	}
	st := api.Stats()
	assert.Zero(t, st.RefreshReuse, "refresh tokens used twice")
	assert.Zero(t, api.refresh[victim].Load(), "the killed process's refresh reached the server")
	assert.Positive(t, st.Refreshes, "refreshes")
}
