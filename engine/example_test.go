package engine_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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

// Submit queues requests and returns their futures at once; Await waits
// for each result. Here the API is an in-process RoundTripper, so the
// example runs without a network.
func ExampleEngine_Submit() {
	api := engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		body := fmt.Sprintf(`{"id":%q}`, r.URL.Query().Get("id"))
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	})
	e, err := engine.New(engine.Config{BaseURL: "https://api.example.com", HTTPClient: &http.Client{Transport: api}})
	if err != nil {
		panic(err)
	}
	defer e.Close()

	ctx := context.Background()
	var futures []*engine.Future
	for _, id := range []string{"a", "b", "c"} {
		futures = append(futures, e.Submit(ctx, requests.New("GET", "/items", requests.WithQuery("id", id))))
	}
	for _, f := range futures {
		resp, err := f.Await(ctx)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(resp.Status, string(resp.Body))
	}
	// Output:
	// 200 {"id":"a"}
	// 200 {"id":"b"}
	// 200 {"id":"c"}
}

// Stream sends every request of a sequence, a window at a time, and yields
// the results in input order, each as soon as it and every earlier one is
// done.
func ExampleEngine_Stream() {
	api := engine.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
		status := 200
		if r.URL.Path == "/items/3" {
			status = 404
		}
		return &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(r.URL.Path)), Request: r}, nil
	})
	e, err := engine.New(engine.Config{BaseURL: "https://api.example.com", HTTPClient: &http.Client{Transport: api}})
	if err != nil {
		panic(err)
	}
	defer e.Close()

	reqs := func(yield func(*requests.Request) bool) {
		for i := 1; i <= 4; i++ {
			if !yield(requests.New("GET", fmt.Sprintf("/items/%d", i))) {
				return
			}
		}
	}
	for res := range e.Stream(context.Background(), reqs, 2) {
		if res.Err != nil {
			var he *errors.HTTPError
			if errors.As(res.Err, &he) {
				fmt.Println(res.Index, "failed with", he.Status)
			}
			continue
		}
		fmt.Println(res.Index, res.Response.Status, string(res.Response.Body))
	}
	// Output:
	// 0 200 /items/1
	// 1 200 /items/2
	// 2 failed with 404
	// 3 200 /items/4
}
