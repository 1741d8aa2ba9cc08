package requests_test

import (
	"io"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/requests"
)

func TestBodiesReopenFromTheStart(t *testing.T) {
	for name, b := range map[string]requests.Body{
		"json":  must(requests.JSONBody(map[string]int{"a": 1})),
		"form":  requests.FormBody(url.Values{"k": {"v w"}}),
		"bytes": requests.BytesBody([]byte("raw"), "text/plain"),
	} {
		for range 2 {
			rc, err := b.Open()
			require.NoError(t, err, name)
			data, _ := io.ReadAll(rc)
			assert.Equal(t, b.Size(), int64(len(data)), name)
		}
	}
	rc, _ := requests.FormBody(url.Values{"k": {"v w"}}).Open()
	data, _ := io.ReadAll(rc)
	assert.Equal(t, "k=v+w", string(data))
}

func must(b requests.Body, err error) requests.Body {
	if err != nil {
		panic(err)
	}
	return b
}

func TestOptionErrorsNameTheRequest(t *testing.T) {
	r := requests.New("POST", "/orders", requests.WithJSON(make(chan int)))
	require.Error(t, r.Err())
	assert.Contains(t, r.Err().Error(), "POST /orders")
	assert.Contains(t, requests.New("GET", "/x", requests.WithTimeout(-1)).Err().Error(), "negative timeout")
	assert.NoError(t, requests.New("", "/x").Err(), "empty method means GET")
}

// A request's errors quote its path without the query or user info it may
// carry. A URL whose password held a '/' used to be quoted whole.
func TestOptionErrorsDoNotQuoteSecrets(t *testing.T) {
	const secret = "s3cr3t"
	for _, path := range []string{
		"/orders?api_key=" + secret,
		"https://user:" + secret + "@api.example/orders",
		"https://user:ab/" + secret + "@api.example/orders",
		"//user:" + secret + "@api.example/orders",
	} {
		for _, r := range []*requests.Request{
			requests.New("GE T", path),
			requests.New("POST", path, requests.WithJSON(make(chan int))),
			requests.New("GET", path, requests.WithTimeout(-1)),
		} {
			err := r.Err()
			require.Error(t, err, path)
			assert.NotContains(t, err.Error(), secret)
			assert.Contains(t, err.Error(), "/orders", "the error names the path")
		}
	}
}

func TestDecode(t *testing.T) {
	v, err := requests.Decode[struct{ N int }](&requests.Response{Status: 200, Body: []byte(`{"n":3}`)})
	require.NoError(t, err)
	assert.Equal(t, 3, v.N)
	_, err = requests.Decode[[]int](&requests.Response{Status: 200, Body: []byte(`{"n":3}`)})
	assert.ErrorContains(t, err, "decode 200 response into []int")
}
