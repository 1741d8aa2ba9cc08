package engine_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// gzipped returns n zero bytes, gzip-compressed: a few KiB that unpack to n.
func gzipped(t *testing.T, n int) []byte {
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	require.NoError(t, err)
	_, err = io.CopyN(zw, zeros{}, int64(n))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return b.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A body over MaxResponseBytes used to cost two to four times the limit
// while it was read (io.ReadAll doubling its buffer), and a gzip bomb the
// same. Reading one now costs about the limit, and the limit counts the
// bytes after the transport has unpacked them.
func TestOversizedBodyCostsAboutTheLimitNotAMultiple(t *testing.T) {
	const limit = 2 << 20
	const size = 8 << 20
	bomb := gzipped(t, size)
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter)
	}{
		{"length not announced", func(w http.ResponseWriter) {
			w.(http.Flusher).Flush() // chunked: no Content-Length
			io.CopyN(w, zeros{}, size)
		}},
		{"length announced", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(size))
			io.CopyN(w, zeros{}, size)
		}},
		{"gzip bomb unpacked by the transport", func(w http.ResponseWriter) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(len(bomb)))
			w.Write(bomb)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tc.serve(w) }))
			defer srv.Close()
			e := newEngine(t, engine.Config{BaseURL: srv.URL, Workers: 1, MaxResponseBytes: limit})
			ctx := ctxTimeout(t, 20*time.Second)
			_, err := e.Get(ctx, "/warm-up") // connections and buffers
			require.ErrorIs(t, err, errors.ErrResponseTooLarge)

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err = e.Get(ctx, "/big")
			runtime.ReadMemStats(&after)
			require.ErrorIs(t, err, errors.ErrResponseTooLarge)
			assert.Contains(t, err.Error(), strconv.Itoa(limit))
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d KiB reading a %d KiB body with a %d KiB limit", allocated>>10, size>>10, limit>>10)
			assert.Less(t, allocated, uint64(limit+limit/2), "reading the body cost more than the limit")
		})
	}
}

// Bodies up to the limit are read whole, whatever their length and
// however they arrive.
func TestBodiesUpToTheLimitAreReadWhole(t *testing.T) {
	const limit = 3<<20 + 7
	for _, n := range []int{0, 1, 511, 512, 513, 4096, 1 << 20, limit} {
		for _, announced := range []bool{false, true} {
			t.Run(strconv.Itoa(n)+map[bool]string{true: " announced", false: " chunked"}[announced], func(t *testing.T) {
				want := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if announced {
						w.Header().Set("Content-Length", strconv.Itoa(n))
					} else {
						w.(http.Flusher).Flush()
					}
					w.Write(want)
				}))
				defer srv.Close()
				e := newEngine(t, engine.Config{BaseURL: srv.URL, MaxResponseBytes: limit})
				resp, err := e.Get(ctxTimeout(t, 10*time.Second), "/x")
				require.NoError(t, err)
				assert.True(t, bytes.Equal(want, resp.Body), "body of %d bytes read as %d", len(want), len(resp.Body))
			})
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		io.CopyN(w, zeros{}, limit+1)
	}))
	defer srv.Close()
	e := newEngine(t, engine.Config{BaseURL: srv.URL, MaxResponseBytes: limit})
	_, err := e.Get(ctxTimeout(t, 10*time.Second), "/x")
	assert.ErrorIs(t, err, errors.ErrResponseTooLarge, "one byte over")
}

// TestHeadWithContentLengthSucceeds pins a bug: the answer to a HEAD
// carries the Content-Length of the body a GET would get, and no body;
// reading that many bytes failed every HEAD with "reading body: EOF".
func TestHeadWithContentLengthSucceeds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "42")
		if r.Method != http.MethodHead {
			w.Write(bytes.Repeat([]byte("x"), 42))
		}
	}))
	t.Cleanup(srv.Close)
	e := newEngine(t, engine.Config{BaseURL: srv.URL})
	resp, err := e.Do(ctxTimeout(t, 10*time.Second), requests.New(http.MethodHead, "/x"))
	require.NoError(t, err)
	assert.Equal(t, 200, resp.Status)
	assert.Equal(t, "42", resp.Header.Get("Content-Length"))
	assert.Empty(t, resp.Body)
}
