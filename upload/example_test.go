package upload_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/upload"
)

// A form field and a streamed file in one upload, sent with its exact
// Content-Length.
func Example() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mr, _ := r.MultipartReader()
		fmt.Println("Content-Length:", r.ContentLength)
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(p)
			fmt.Printf("%s %q %d bytes\n", p.FormName(), p.FileName(), len(b))
		}
	}))
	defer api.Close()
	e, _ := engine.New(engine.Config{BaseURL: api.URL})
	defer e.Close()

	var b upload.Builder
	body, err := b.
		Field("album", "holiday").
		Reader("photo", "beach.jpg", 11, "", func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("jpeg bytes!")), nil
		}).
		Build()
	if err != nil {
		panic(err)
	}
	resp, err := e.Upload(context.Background(), "/upload", body)
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Status, body.Size() > 0)
	// Output:
	// Content-Length: 360
	// album "" 7 bytes
	// photo "beach.jpg" 11 bytes
	// 200 true
}
