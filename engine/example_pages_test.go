package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/paginate"
	"github.com/courier-go/courier/requests"
)

// A collection of three pages linked by rel="next", crawled twice: the
// second time every page is revalidated with its ETag and the server
// answers 304 Not Modified.
func ExampleEngine_Pages() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		page = max(page, 1)
		if page < 3 {
			w.Header().Set("Link", fmt.Sprintf(`</issues?page=%d>; rel="next"`, page+1))
		}
		etag := fmt.Sprintf(`"page-%d"`, page)
		w.Header().Set("Etag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, `[{"issue":%d}]`, page)
	}))
	defer api.Close()

	e, err := engine.New(engine.Config{BaseURL: api.URL, Cache: engine.NewMemoryCache(0)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	ctx := context.Background()
	for range 2 {
		for resp, err := range e.Pages(ctx, requests.New("GET", "/issues"), paginate.Link()) {
			if err != nil {
				fmt.Println(err)
				return
			}
			fmt.Println(string(resp.Body), resp.Cache)
		}
	}
	// Output:
	// [{"issue":1}] miss
	// [{"issue":2}] miss
	// [{"issue":3}] miss
	// [{"issue":1}] revalidated
	// [{"issue":2}] revalidated
	// [{"issue":3}] revalidated
}
