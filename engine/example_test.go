package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// The token has expired: the first request gets 401, the engine refreshes
// once, replays it, and the caller sees only the answer.
func Example() {
	var refreshes atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/auth/refresh":
			refreshes.Add(1)
			fmt.Fprint(w, `{"access_token":"fresh","refresh_token":"rt-2","expires_in":3600}`)
		case r.Header.Get("Authorization") != "Bearer fresh":
			w.WriteHeader(http.StatusUnauthorized)
		default:
			fmt.Fprint(w, `{"name":"Ada"}`)
		}
	}))
	defer api.Close()

	e, err := engine.New(engine.Config{
		BaseURL: api.URL,
		Auth: engine.Auth{
			AccessToken:  "expired",
			RefreshToken: "rt-1",
			Refresh:      &engine.RefreshConfig{Path: "/auth/refresh"},
		},
	})
	if err != nil {
		panic(err)
	}
	defer e.Close()

	resp, err := e.Get(context.Background(), "/users/1")
	if err != nil {
		panic(err)
	}
	user, _ := requests.Decode[struct{ Name string }](resp)
	fmt.Println(resp.Status, user.Name, "attempts:", resp.Attempts, "refreshes:", refreshes.Load())
	// Output: 200 Ada attempts: 2 refreshes: 1
}

// Non-2xx answers are *errors.HTTPError; transport failures are
// *errors.RequestError; engine conditions are sentinels.
func ExampleEngine_Do_errors() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such user", http.StatusNotFound)
	}))
	defer api.Close()
	e, _ := engine.New(engine.Config{BaseURL: api.URL})
	defer e.Close()

	_, err := e.Do(context.Background(), requests.New("GET", "/users/404"))
	var he *errors.HTTPError
	if errors.As(err, &he) {
		fmt.Println(he.Status, he.Attempts, string(he.Body))
	}
	e.Close()
	_, err = e.Get(context.Background(), "/users/1")
	fmt.Println(errors.Is(err, errors.ErrClosed))
	// Output:
	// 404 1 no such user
	//
	// true
}
