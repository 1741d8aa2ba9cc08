package engine_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// TestBaseURLQueryIsKeptOnEveryRequest pins a bug: a query in BaseURL
// (an API version, a key) was dropped from every request.
func TestBaseURLQueryIsKeptOnEveryRequest(t *testing.T) {
	got := make(chan string, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Path + "?" + r.URL.RawQuery
	}))
	defer srv.Close()
	e, err := engine.New(engine.Config{BaseURL: srv.URL + "/api?v=2&key=k", Dedup: engine.Dedup{Disabled: true}})
	require.NoError(t, err)
	defer e.Close()
	for _, tc := range []struct {
		req  *requests.Request
		want string
	}{
		{requests.New("GET", "/items"), "/api/items?key=k&v=2"},
		{requests.New("GET", "/items?page=3"), "/api/items?key=k&page=3&v=2"},
		{requests.New("GET", "/items", requests.WithQuery("v", "3")), "/api/items?key=k&v=3"},
		{requests.New("GET", "/a/../items"), "/api/items?key=k&v=2"},
		{requests.New("GET", srv.URL+"/abs?x=1"), "/abs?x=1"},
	} {
		_, err := e.Do(context.Background(), tc.req)
		require.NoError(t, err)
		assert.Equal(t, tc.want, <-got, tc.req.Path)
	}
}
