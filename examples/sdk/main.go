// SDK runs a generated-style API client (package itemsapi, shaped like
// oapi-codegen's output) on courier: the client takes an HttpRequestDoer,
// and e.HTTPClient() is one. The client knows nothing of tokens; the
// engine attaches them, refreshes the expired one once for every request
// that met it, retries, paces and queues.
//
//	go run ./examples/sdk
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"sync"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/examples/sdk/itemsapi"
	"github.com/courier-go/courier/internal/demo"
)

func main() {
	if err := run(context.Background(), os.Stdout, 40); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, w io.Writer, items int) error {
	// Each access token serves 15 requests: the run outlives the first.
	api, err := demo.Start("127.0.0.1:0", demo.Config{AccessUses: 15})
	if err != nil {
		return err
	}
	defer api.Close()
	tk := api.Login()

	e, err := engine.New(engine.Config{
		BaseURL: api.URL,
		Workers: 8,
		Auth: engine.Auth{
			AccessToken: tk.AccessToken, RefreshToken: tk.RefreshToken,
			Refresh: &engine.RefreshConfig{Path: "/auth/refresh"},
		},
	})
	if err != nil {
		return err
	}
	defer e.Close()

	client, err := itemsapi.NewClientWithResponses(api.URL, itemsapi.WithHTTPClient(e.HTTPClient()))
	if err != nil {
		return err
	}

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total float64
		fails int
	)
	for i := range items {
		wg.Go(func() {
			r, err := client.GetItemWithResponse(ctx, strconv.Itoa(i+1))
			mu.Lock()
			defer mu.Unlock()
			if err != nil || r.JSON200 == nil {
				fails++
				return
			}
			total += r.JSON200.Price
		})
	}
	wg.Wait()
	created, err := client.CreateItemWithResponse(ctx, itemsapi.NewItem{Name: "lamp", Price: 19.5})
	if err != nil {
		return err
	}
	if created.JSON201 == nil {
		return fmt.Errorf("create: status %d", created.StatusCode())
	}
	st := e.Stats()
	fmt.Fprintf(w, "fetched %d items (total price %.2f), %d failed, created item %d; %d token refreshes\n",
		items-fails, total, fails, created.JSON201.ID, st.Refreshes)
	return nil
}
