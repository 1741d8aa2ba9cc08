package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/courier-go/courier/engine"
)

// BenchmarkFetch is fetch's own cost per line: parse, submit, describe and
// write, against an in-process server.
func BenchmarkFetch(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":42,"name":"widget","price":9.99,"tags":["a","b","c"]}`))
	}))
	defer srv.Close()
	var in strings.Builder
	for i := range b.N {
		fmt.Fprintf(&in, "/item?i=%d\n", i)
	}
	e, err := engine.New(engine.Config{BaseURL: srv.URL, Workers: 16, Auth: engine.Auth{AccessToken: "t"}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.ReportAllocs()
	b.ResetTimer()
	var sum summary
	src := newInput(openInput("", strings.NewReader(in.String())), defaultMaxLine, &lineParser{})
	code, err := fetch(context.Background(), e, src, io.Discard, 16+engine.DefaultQueueSize, &progress{}, &sum)
	if err != nil || code != exitOK {
		b.Fatalf("fetch: %d %v", code, err)
	}
}
