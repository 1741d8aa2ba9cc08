package couriertest_test

import (
	"context"
	"fmt"
	"strconv"
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
