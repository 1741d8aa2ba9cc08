package couriertest_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/courier-go/courier/couriertest"
	"github.com/courier-go/courier/engine"
)

// A server whose tokens serve two requests each: five requests take two
// refreshes.
func ExampleNewServer() {
	srv := couriertest.NewServer(couriertest.WithTokenUses(2))
	defer srv.Close()
	e, err := engine.New(engine.Config{BaseURL: srv.URL, Auth: srv.Auth()})
	if err != nil {
		panic(err)
	}
	defer e.Close()
	for i := range 5 {
		if _, err := e.Get(context.Background(), "/items/"+strconv.Itoa(i)); err != nil {
			panic(err)
		}
	}
	st := srv.Stats()
	fmt.Println("refreshes:", st.Refreshes, "401s:", st.Unauthorized)
	// Output: refreshes: 2 401s: 2
}

// A path that fails twice before it answers.
func ExampleWithFaults() {
	srv := couriertest.NewServer(couriertest.WithFaults("/items/1",
		couriertest.Status(503), couriertest.Status(502)))
	defer srv.Close()
	e, err := engine.New(engine.Config{BaseURL: srv.URL, Auth: srv.Auth(),
		Retry: engine.Retry{BaseDelay: time.Millisecond}})
	if err != nil {
		panic(err)
	}
	defer e.Close()
	resp, err := e.Get(context.Background(), "/items/1")
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Status, "after", resp.Attempts, "attempts;", srv.Stats().Faults, "faults served")
	// Output: 200 after 3 attempts; 2 faults served
}

// Record a session against a server, then replay it with the server gone.
func ExampleReplay() {
	dir, err := os.MkdirTemp("", "recordings")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv := couriertest.NewServer()
	fetch := func(transport http.RoundTripper) {
		e, err := engine.New(engine.Config{BaseURL: srv.URL, Auth: srv.Auth(),
			HTTPClient: &http.Client{Transport: transport}})
		if err != nil {
			panic(err)
		}
		defer e.Close()
		resp, err := e.Get(context.Background(), "/items/7")
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(resp.Status, strings.TrimSpace(string(resp.Body)))
	}
	fetch(couriertest.Record(dir, nil))
	srv.Close()
	fetch(couriertest.Replay(dir))
	// Output:
	// 200 {"id":"7","name":"item-7","price":92.06}
	// 200 {"id":"7","name":"item-7","price":92.06}
}
