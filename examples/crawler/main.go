// Crawler walks the demo API's item pages and fetches every item they list,
// many at once, through one engine: pages in order with Engine.Pages, item
// fetches as futures, duplicates merged, tokens refreshed as they expire;
// then it crawls again, and the engine's cache revalidates every answer.
//
//	go run ./examples/crawler
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/paginate"
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
		// Answers with an ETag are kept; a second crawl revalidates them.
		Cache: engine.NewMemoryCache(32 << 20),
	})
	if err != nil {
		return err
	}
	defer e.Close()

	// Every page of the collection, in order: the Link header's
	// rel="next" leads from one to the next, and its rel="last" lets the
	// engine fetch the pages ahead in parallel.
	var futures []*engine.Future
	crawl := func() (int, error) {
		n := 0
		for resp, err := range e.Pages(ctx, requests.New("GET", "/items"), paginate.Link(paginate.MaxPages(pages))) {
			if err != nil {
				return n, fmt.Errorf("page %d: %w", n+1, err)
			}
			n++
			pg, err := requests.Decode[page](resp)
			if err != nil {
				return n, err
			}
			for _, it := range pg.Items {
				// Each item twice, as a sloppy crawler would: dedup merges them.
				for range 2 {
					futures = append(futures, e.Submit(ctx, requests.New("GET", "/items/"+it.ID)))
				}
			}
		}
		return n, nil
	}
	crawled, err := crawl()
	if err != nil {
		return err
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
		crawled, len(futures), st.DedupHits, st.Refreshes, total/2)

	// The same crawl again: the cache holds every answer with its ETag,
	// so each page and item is revalidated, and the server answers 304.
	futures = futures[:0]
	merged := st.DedupHits
	if _, err := crawl(); err != nil {
		return err
	}
	for _, f := range futures {
		if _, err := f.Await(ctx); err != nil {
			return err
		}
	}
	st = e.Stats()
	fmt.Fprintf(w, "crawled again: %d answers revalidated (304), %d fetches merged, %d bytes served from the cache\n",
		st.CacheRevalidations, st.DedupHits-merged, st.CacheBytes)
	return e.Shutdown(ctx)
}
