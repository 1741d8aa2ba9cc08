package main

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/courier-go/courier/couriertest"
	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/examples/sdk/itemsapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSDKRunsThroughATokenRefresh(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, 40))
	assert.Contains(t, out.String(), "fetched 40 items")
	assert.Contains(t, out.String(), "0 failed, created item 1;")
	assert.NotContains(t, out.String(), " 0 token refreshes", "the token expired during the run")
}

// TestGeneratedClientThroughHTTPClient is the client alone under
// e.HTTPClient(), tested with couriertest: every request meets an expired
// token at first, and each gets its item after exactly one refresh.
func TestGeneratedClientThroughHTTPClient(t *testing.T) {
	srv := couriertest.NewServer()
	t.Cleanup(srv.Close)
	srv.ExpireTokens()
	e := newEngine(t, srv.URL, srv.Auth(), nil)

	client, err := itemsapi.NewClientWithResponses(srv.URL, itemsapi.WithHTTPClient(e.HTTPClient()))
	require.NoError(t, err)
	var wg sync.WaitGroup
	got := make([]*itemsapi.GetItemResponse, 20)
	errs := make([]error, 20)
	for i := range got {
		wg.Go(func() { got[i], errs[i] = client.GetItemWithResponse(context.Background(), strconv.Itoa(i)) })
	}
	wg.Wait()
	for i, r := range got {
		require.NoError(t, errs[i])
		require.Equal(t, 200, r.StatusCode(), "item %d: %s", i, r.Body)
		assert.Equal(t, strconv.Itoa(i), r.JSON200.ID)
	}
	assert.Equal(t, int64(1), e.Stats().Refreshes)
	assert.Equal(t, int64(1), srv.Stats().Refreshes)
	assert.Zero(t, srv.Stats().RefreshReuse)

	// A POST with a body: http.NewRequest set GetBody, so it could be sent again.
	created, err := client.CreateItemWithResponse(context.Background(), itemsapi.NewItem{Name: "lamp", Price: 1})
	require.NoError(t, err)
	require.Equal(t, 201, created.StatusCode())
	assert.Equal(t, "lamp", created.JSON201.Item.Name)
}

// newEngine is an engine for baseURL whose client sends through transport
// (the default one if nil), closed with the test.
func newEngine(t *testing.T, baseURL string, auth engine.Auth, transport http.RoundTripper) *engine.Engine {
	cfg := engine.Config{BaseURL: baseURL, Auth: auth,
		Retry: engine.Retry{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}}
	if transport != nil {
		cfg.HTTPClient = &http.Client{Transport: transport}
	}
	e, err := engine.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

// The client rides out a server that flakes and expires tokens: each item
// arrives, the engine refreshed once per expired token and never reused a
// spent refresh token, and each flaky item was asked for twice.
func TestGeneratedClientThroughFlakesAndExpiry(t *testing.T) {
	srv := couriertest.NewServer(couriertest.WithTokenUses(10),
		couriertest.WithFaults("/items/", couriertest.Unavailable(0)),
		couriertest.WithFaults("/items/3", couriertest.Reset()))
	t.Cleanup(srv.Close)
	e := newEngine(t, srv.URL, srv.Auth(), nil)
	client, err := itemsapi.NewClientWithResponses(srv.URL, itemsapi.WithHTTPClient(e.HTTPClient()))
	require.NoError(t, err)
	for i := range 12 {
		r, err := client.GetItemWithResponse(context.Background(), strconv.Itoa(i))
		require.NoError(t, err)
		require.Equal(t, 200, r.StatusCode(), "item %d: %s", i, r.Body)
		assert.Equal(t, couriertest.ItemFor(strconv.Itoa(i)).Price, r.JSON200.Price)
	}
	st := srv.Stats()
	assert.EqualValues(t, 1, st.Refreshes, "12 answers, a token serves 10")
	assert.Zero(t, st.RefreshReuse)
	for i := range 12 {
		assert.GreaterOrEqual(t, st.Paths["/items/"+strconv.Itoa(i)], int64(2), "item %d failed once first", i)
	}
}

// A session recorded against the server replays without it: the SDK's
// test needs no network once the recording exists.
func TestGeneratedClientAgainstARecording(t *testing.T) {
	srv := couriertest.NewServer(couriertest.WithTokenUses(2))
	dir := t.TempDir()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	fetch := func(transport http.RoundTripper, auth engine.Auth) []float64 {
		e := newEngine(t, srv.URL, auth, transport)
		client, err := itemsapi.NewClientWithResponses(srv.URL, itemsapi.WithHTTPClient(e.HTTPClient()))
		require.NoError(t, err)
		var prices []float64
		for i := range 5 {
			r, err := client.GetItemWithResponse(context.Background(), strconv.Itoa(i))
			require.NoError(t, err)
			require.Equal(t, 200, r.StatusCode(), string(r.Body))
			prices = append(prices, r.JSON200.Price)
		}
		return prices
	}
	live := fetch(couriertest.Record(dir, tr), srv.Auth())
	srv.Close()
	assert.EqualValues(t, 2, srv.Stats().Refreshes)
	replayed := fetch(couriertest.Replay(dir), engine.Auth{AccessToken: "old", RefreshToken: "older",
		Refresh: &engine.RefreshConfig{Path: "/auth/refresh"}})
	assert.Equal(t, live, replayed)
}
