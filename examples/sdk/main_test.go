package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/examples/sdk/itemsapi"
	"github.com/courier-go/courier/internal/demo"
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
// e.HTTPClient(): every request meets an expired token at first, and each
// gets its item after exactly one refresh.
func TestGeneratedClientThroughHTTPClient(t *testing.T) {
	api := demo.New(demo.Config{})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	tk := api.Login()
	e, err := engine.New(engine.Config{
		BaseURL: srv.URL,
		Auth: engine.Auth{AccessToken: "expired", RefreshToken: tk.RefreshToken,
			Refresh: &engine.RefreshConfig{Path: "/auth/refresh"}},
	})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })

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
	assert.Equal(t, int64(1), api.Stats().Refreshes)

	// A POST with a body: http.NewRequest set GetBody, so it could be sent again.
	created, err := client.CreateItemWithResponse(context.Background(), itemsapi.NewItem{Name: "lamp", Price: 1})
	require.NoError(t, err)
	require.Equal(t, 201, created.StatusCode())
	assert.Equal(t, "lamp", created.JSON201.Item.Name)
}
