package upload_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/requests"
	"github.com/courier-go/courier/upload"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writeFile(t *testing.T, name string, data []byte) string {
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

// demoEngine starts the demo API and an engine logged in to it.
func demoEngine(t *testing.T, cfg demo.Config) (*httptest.Server, *demo.Server, *engine.Engine) {
	api := demo.New(cfg)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	tk := api.Login()
	e, err := engine.New(engine.Config{BaseURL: srv.URL, Auth: engine.Auth{
		AccessToken: tk.AccessToken, RefreshToken: tk.RefreshToken,
		Refresh: &engine.RefreshConfig{Path: "/auth/refresh"},
	}})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	return srv, api, e
}

func TestPartsArriveIntact(t *testing.T) {
	_, _, e := demoEngine(t, demo.Config{})
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{7}, 70_000)...)
	a := writeFile(t, "a.png", png)
	b := writeFile(t, "b", []byte("%PDF-1.7 not really")) // no extension: sniffed
	c := writeFile(t, "notes", []byte("plain words"))
	gen := bytes.Repeat([]byte("0123456789"), 5000)

	for _, tc := range []struct {
		name  string
		build func(*upload.Builder)
		want  []demo.UploadedPart
	}{
		{"single file", func(u *upload.Builder) { u.File("image", a) },
			[]demo.UploadedPart{{Field: "image", Filename: "a.png", ContentType: "image/png", Size: int64(len(png)), SHA256: sum(png)}}},
		{"many files in one field", func(u *upload.Builder) { u.File("image", a, b, c) },
			[]demo.UploadedPart{
				{Field: "image", Filename: "a.png", ContentType: "image/png", Size: int64(len(png)), SHA256: sum(png)},
				{Field: "image", Filename: "b", ContentType: "application/pdf", Size: 19, SHA256: sum([]byte("%PDF-1.7 not really"))},
				{Field: "image", Filename: "notes", ContentType: "text/plain; charset=utf-8", Size: 11, SHA256: sum([]byte("plain words"))},
			}},
		{"fields, files and readers", func(u *upload.Builder) {
			u.Field("title", "holiday").File("image", a).File("doc", c).
				Reader("gen", "gen.txt", int64(len(gen)), "", func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(gen)), nil }).
				Field("tags", `a "quoted" value`)
		}, []demo.UploadedPart{
			{Field: "title", Size: 7, SHA256: sum([]byte("holiday")), Value: "holiday"},
			{Field: "image", Filename: "a.png", ContentType: "image/png", Size: int64(len(png)), SHA256: sum(png)},
			{Field: "doc", Filename: "notes", ContentType: "text/plain; charset=utf-8", Size: 11, SHA256: sum([]byte("plain words"))},
			{Field: "gen", Filename: "gen.txt", ContentType: "text/plain; charset=utf-8", Size: int64(len(gen)), SHA256: sum(gen)},
			{Field: "tags", Size: 16, SHA256: sum([]byte(`a "quoted" value`)), Value: `a "quoted" value`},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var u upload.Builder
			tc.build(&u)
			body, err := u.Build()
			require.NoError(t, err)
			resp, err := e.Upload(context.Background(), "/upload", body)
			require.NoError(t, err)
			ans, err := requests.Decode[demo.UploadAnswer](resp)
			require.NoError(t, err)
			assert.Equal(t, tc.want, ans.Parts)
			assert.Equal(t, body.Size(), ans.ContentLength, "sent with its exact Content-Length, not chunked")
		})
	}
}

func TestUploadIsSentAgainInFullAfterRefresh(t *testing.T) {
	// Each access token serves one request: the upload's first attempt gets
	// 401, and its replay goes out with the refreshed token.
	_, api, e := demoEngine(t, demo.Config{AccessUses: 1})
	_, err := e.Get(context.Background(), "/items/1") // uses up the token
	require.NoError(t, err)
	data := bytes.Repeat([]byte("abcdefgh"), 100_000)
	p := writeFile(t, "big.dat", data)
	var mu sync.Mutex
	var reports []int64
	var u upload.Builder
	body, err := u.File("file", p).Field("k", "v").Progress(func(sent, _ int64) {
		mu.Lock()
		reports = append(reports, sent)
		mu.Unlock()
	}).Build()
	require.NoError(t, err)
	resp, err := e.Upload(context.Background(), "/upload", body)
	require.NoError(t, err)
	ans, err := requests.Decode[demo.UploadAnswer](resp)
	require.NoError(t, err)
	require.Len(t, ans.Parts, 2)
	assert.Equal(t, sum(data), ans.Parts[0].SHA256, "identical bytes on the replay")
	assert.Equal(t, int64(len(data)), ans.Parts[0].Size)
	assert.Equal(t, "v", ans.Parts[1].Value)
	assert.Equal(t, 2, resp.Attempts)
	assert.EqualValues(t, 1, api.Stats().Refreshes)
	// The first attempt may be answered before any of its body is read, so
	// its reports may be missing; the replay's run from the start to the
	// end without going back.
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, reports)
	restarts := 0
	for i := 1; i < len(reports); i++ {
		if reports[i] <= reports[i-1] {
			restarts++
		}
	}
	assert.LessOrEqual(t, restarts, 1, "progress went back only for the replay: %v", reports)
	assert.Equal(t, body.Size(), reports[len(reports)-1], "progress reached the total")
}

func TestProgressFollowsTheNewestAttempt(t *testing.T) {
	p := writeFile(t, "f.dat", bytes.Repeat([]byte("x"), 64<<10))
	var got []int64
	var u upload.Builder
	body, err := u.File("f", p).Progress(func(sent, _ int64) { got = append(got, sent) }).Build()
	require.NoError(t, err)
	buf := make([]byte, 1024)
	read := func(r io.Reader) int64 {
		n, err := r.Read(buf)
		require.NoError(t, err)
		require.Positive(t, n)
		return int64(n)
	}

	first, err := body.Open()
	require.NoError(t, err)
	defer first.Close()
	a := read(first)
	second, err := body.Open() // a retry, while the transport still reads the first
	require.NoError(t, err)
	b1 := read(second)
	read(first) // a late read of the answered attempt: still served
	b2 := read(second)
	require.NoError(t, second.Close())

	assert.Equal(t, []int64{a, b1, b1 + b2}, got, "no report from the earlier attempt once the newer one began")
}

func TestMissingFileIsNamedBeforeAnythingIsSent(t *testing.T) {
	ok := writeFile(t, "ok.txt", []byte("x"))
	var u upload.Builder
	_, err := u.File("f", ok, "/no/such/file.png").File("g", t.TempDir()).Build()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"/no/such/file.png"`)
	assert.Contains(t, err.Error(), "no such file")
	assert.Contains(t, err.Error(), "not a regular file")
}

func TestCancelMidUploadStopsReading(t *testing.T) {
	got := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.CopyN(io.Discard, r.Body, 1<<20)
		got <- struct{}{}
		_, _ = io.Copy(io.Discard, r.Body) // until the client goes away
	}))
	defer srv.Close()
	e, err := engine.New(engine.Config{BaseURL: srv.URL})
	require.NoError(t, err)
	defer e.Close()

	var read atomic.Int64
	const size = 1 << 30
	var u upload.Builder
	body, err := u.Reader("f", "endless.bin", size, "", func() (io.ReadCloser, error) {
		return io.NopCloser(io.LimitReader(countingZeros{&read}, size)), nil
	}).Build()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	f := e.Submit(ctx, requests.New("POST", "/upload", requests.WithBody(body)))
	<-got
	cancel()
	_, err = f.Await(context.Background())
	assert.ErrorIs(t, err, context.Canceled)
	e.Close()
	stopped := read.Load()
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, stopped, read.Load(), "nothing reads the source after cancel")
	assert.Less(t, stopped, int64(size))
}

type countingZeros struct{ n *atomic.Int64 }

func (c countingZeros) Read(p []byte) (int, error) {
	clear(p)
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// TestGigabyteUploadKeepsHeapFlat streams 1 GiB and samples the heap while
// it goes.
func TestGigabyteUploadKeepsHeapFlat(t *testing.T) {
	var received atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		received.Store(n)
	}))
	defer srv.Close()
	e, err := engine.New(engine.Config{BaseURL: srv.URL})
	require.NoError(t, err)
	defer e.Close()

	// A sparse 1 GiB file: real file I/O, no disk used.
	p := filepath.Join(t.TempDir(), "big.bin")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(1<<30))
	require.NoError(t, f.Close())

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	var u upload.Builder
	var calls int
	body, err := u.File("file", p).Progress(func(sent, total int64) {
		calls++
		if calls%2000 == 0 {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}).Build()
	require.NoError(t, err)
	resp, err := e.Upload(context.Background(), "/upload", body)
	require.NoError(t, err)
	assert.Equal(t, 200, resp.Status)
	assert.Equal(t, body.Size(), received.Load())
	growth := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("heap in use before %d MiB, peak during upload %d MiB, growth %d MiB",
		before.HeapInuse>>20, peak.Load()>>20, growth>>20)
	assert.Less(t, growth, int64(32<<20), "heap growth while streaming 1 GiB")
}
