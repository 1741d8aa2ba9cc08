// Worker embeds the engine in a long-running job consumer: jobs arrive on a
// channel, each becomes an idempotent POST, failures reach one error hook,
// and the session ending (here: the operator logs out) stops the work
// cleanly instead of hammering the API.
//
//	go run ./examples/worker
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/requests"
)

func main() {
	if err := run(context.Background(), os.Stdout, 200); err != nil {
		log.Fatal(err)
	}
}

type job struct {
	ID   string
	Name string
}

func run(ctx context.Context, w io.Writer, jobs int) error {
	api, err := demo.Start("127.0.0.1:0", demo.Config{AccessUses: 50})
	if err != nil {
		return err
	}
	defer api.Close()
	tk := api.Login()

	var failed, expired atomic.Int64
	logger := zerolog.New(zerolog.ConsoleWriter{Out: io.Discard})
	e, err := engine.New(engine.Config{
		BaseURL: api.URL,
		Workers: 8,
		Logger:  &logger,
		Auth: engine.Auth{
			AccessToken: tk.AccessToken, RefreshToken: tk.RefreshToken,
			Refresh:          &engine.RefreshConfig{Path: "/auth/refresh"},
			OnSessionExpired: func() { expired.Add(1) },
		},
		OnError: func(req *requests.Request, err error) {
			if !errors.Is(err, errors.ErrSessionExpired) {
				failed.Add(1)
			}
		},
	})
	if err != nil {
		return err
	}

	queue := make(chan job)
	go func() {
		defer close(queue)
		for i := range jobs {
			queue <- job{ID: "job-" + strconv.Itoa(i), Name: "widget " + strconv.Itoa(i)}
		}
	}()

	var done, stopped int
	for j := range queue {
		if done == jobs/2 {
			e.TerminateSession() // the operator logs out half way
		}
		// The idempotency key makes the POST safe to retry.
		_, err := e.Post(ctx, "/items", requests.WithJSON(j), requests.WithIdempotencyKey(j.ID))
		switch {
		case errors.Is(err, errors.ErrSessionExpired):
			stopped++
		case err != nil:
			return err
		default:
			done++
		}
	}
	if err := e.Shutdown(ctx); err != nil {
		return err
	}
	fmt.Fprintf(w, "created %d items, %d jobs stopped by logout, %d other failures, session ended %d time(s), %d refreshes\n",
		done, stopped, failed.Load(), expired.Load(), e.Stats().Refreshes)
	return nil
}
