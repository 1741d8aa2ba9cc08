// Crawler walks the demo API's item pages and fetches every item they list,
// many at once, through one engine: pages in order with Engine.Stream, item
// fetches as futures, duplicates merged, tokens refreshed as they expire.
//
//	go run ./examples/crawler
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/requests"
)

func main() {
	if err := run(context.Background(), os.Stdout, 20); err != nil {
		log.Fatal(err)
	}
}

type page struct {
	Page  int         `json:"page"`
	Items []demo.Item `json:"items"`
}

func run(ctx context.Context, w io.Writer, pages int) error {
	api, err := demo.Start("127.0.0.1:0", demo.Config{AccessUses: 100})
	if err != nil {
		return err
	}
	defer api.Close()
	tk := api.Login()

	e, err := engine.New(engine.Config{
		BaseURL: api.URL,
		Workers: 16,
		Auth: engine.Auth{
			AccessToken: tk.AccessToken, RefreshToken: tk.RefreshToken,
			Refresh: &engine.RefreshConfig{Path: "/auth/refresh"},
		},
		RateLimit: engine.RateLimit{PerSecond: 2000, Burst: 50},
	})
	if err != nil {
		return err
	}
	defer e.Close()

	// Pages, in order, as they complete.
	pageReqs := func(yield func(*requests.Request) bool) {
		for p := 1; p <= pages; p++ {
			if !yield(requests.New("GET", "/items", requests.WithQuery("page", strconv.Itoa(p)))) {
				return
			}
		}
	}
	var futures []*engine.Future
	for res := range e.Stream(ctx, pageReqs, 0) {
		if res.Err != nil {
			return fmt.Errorf("page %d: %w", res.Index+1, res.Err)
		}
		pg, err := requests.Decode[page](res.Response)
		if err != nil {
			return err
		}
		for _, it := range pg.Items {
			// Each item twice, as a sloppy crawler would: dedup merges them.
			for range 2 {
				futures = append(futures, e.Submit(ctx, requests.New("GET", "/items/"+it.ID)))
			}
		}
	}
	var total float64
	for _, f := range futures {
		resp, err := f.Await(ctx)
		if err != nil {
			return err
		}
		it, err := requests.Decode[demo.Item](resp)
		if err != nil {
			return err
		}
		total += it.Price
	}
	st := e.Stats()
	fmt.Fprintf(w, "crawled %d pages, %d item fetches (%d merged), %d token refreshes, total price %.2f\n",
		pages, len(futures), st.DedupHits, st.Refreshes, total/2)
	return e.Shutdown(ctx)
}
