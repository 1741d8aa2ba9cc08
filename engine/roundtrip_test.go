package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// get sends a GET for url through c and returns the status and body.
func get(t *testing.T, c *http.Client, url string) (int, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestRoundTripperRefreshesOnceForA401Storm(t *testing.T) {
	s := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	})
	e := newEngine(t, authConfig(s))
	c := &http.Client{Transport: e.RoundTripper()}

	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	bodies := make([]string, n)
	for i := range n {
		wg.Go(func() {
			var status int
			status, bodies[i], errs[i] = get(t, c, s.URL+"/items/"+itoa(i))
			if errs[i] == nil && status != 200 {
				errs[i] = fmt.Errorf("status %d", status)
			}
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "request %d", i)
		assert.Equal(t, `{"path":"/items/`+itoa(i)+`"}`, bodies[i])
	}
	assert.Equal(t, int64(1), s.refreshCalls.Load(), "one refresh for the whole storm")
	assert.Equal(t, int64(1), e.Stats().Refreshes)
}

// recordingServer answers each request with the status next() gives and
// records every request body it saw.
type recordingServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
	auths  []string
}

func newRecordingServer(t *testing.T, next func(n int, r *http.Request) int) *recordingServer {
	rs := &recordingServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rs.mu.Lock()
		rs.bodies = append(rs.bodies, string(b))
		rs.auths = append(rs.auths, r.Header.Get("Authorization"))
		n := len(rs.bodies)
		rs.mu.Unlock()
		status := next(n, r)
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "answer %d", n)
	}))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *recordingServer) seen() ([]string, []string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]string(nil), rs.bodies...), append([]string(nil), rs.auths...)
}

func TestRoundTripperReplaysABodyWithGetBody(t *testing.T) {
	payload := bytes.Repeat([]byte("courier-"), 40_000) // 320 kB, past any buffer
	for _, tc := range []struct {
		name  string
		first int // the first answer; the second is 200
	}{
		{"retried after 503", http.StatusServiceUnavailable},
		{"replayed after 401", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRecordingServer(t, func(n int, r *http.Request) int {
				if n == 1 {
					return tc.first
				}
				return 200
			})
			e := newEngine(t, engine.Config{
				BaseURL: rs.URL,
				Retry:   fastRetry(),
				Auth: engine.Auth{AccessToken: "one", RefreshToken: "r", Refresher: func(context.Context, string) (engine.Tokens, error) {
					return engine.Tokens{AccessToken: "two"}, nil
				}},
			})
			req, err := http.NewRequest(http.MethodPut, rs.URL+"/doc", bytes.NewReader(payload))
			require.NoError(t, err)
			resp, err := e.HTTPClient().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "answer 2", string(b), "the body is the final attempt's")

			bodies, auths := rs.seen()
			require.Len(t, bodies, 2)
			assert.Equal(t, string(payload), bodies[0])
			assert.Equal(t, string(payload), bodies[1], "sent again byte for byte")
			if tc.first == http.StatusUnauthorized {
				assert.Equal(t, []string{"Bearer one", "Bearer two"}, auths)
			}
		})
	}
}

// onlyReader hides everything but Read, so http.NewRequest cannot set
// GetBody.
type onlyReader struct{ io.Reader }

func TestRoundTripperDoesNotResendABodyWithoutGetBody(t *testing.T) {
	for _, tc := range []struct {
		name, why string
		first     int
	}{
		{"503", "retried", http.StatusServiceUnavailable},
		{"401", "replayed after a token refresh", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRecordingServer(t, func(n int, r *http.Request) int {
				if n == 1 {
					return tc.first
				}
				return 200
			})
			e := newEngine(t, engine.Config{
				BaseURL: rs.URL,
				Retry:   fastRetry(),
				Auth: engine.Auth{AccessToken: "one", RefreshToken: "r", Refresher: func(context.Context, string) (engine.Tokens, error) {
					return engine.Tokens{AccessToken: "two"}, nil
				}},
			})
			req, err := http.NewRequest(http.MethodPut, rs.URL+"/doc", onlyReader{strings.NewReader("once only")})
			require.NoError(t, err)
			require.Nil(t, req.GetBody)
			resp, err := e.HTTPClient().Do(req)
			if resp != nil {
				resp.Body.Close()
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, errors.ErrBodyNotReplayable)
			assert.Contains(t, err.Error(), "GetBody")
			assert.Contains(t, err.Error(), "would have been "+tc.why)
			var he *errors.HTTPError
			require.ErrorAs(t, err, &he, "the first answer is in the error")
			assert.Equal(t, tc.first, he.Status)
			assert.Equal(t, "answer 1", string(he.Body))
			bodies, _ := rs.seen()
			assert.Equal(t, []string{"once only"}, bodies, "one attempt")
		})
	}

	t.Run("a 200 needs no second attempt", func(t *testing.T) {
		rs := newRecordingServer(t, func(int, *http.Request) int { return 200 })
		e := newEngine(t, engine.Config{BaseURL: rs.URL})
		req, err := http.NewRequest(http.MethodPost, rs.URL+"/doc", onlyReader{strings.NewReader("once only")})
		require.NoError(t, err)
		resp, err := e.HTTPClient().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode)
	})
}

// patternReader yields n bytes of a repeating pattern without holding them.
type patternReader struct{ left int64 }

var pattern = bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := copy(b, pattern[:min(int64(len(pattern)), p.left, int64(len(b)))])
	p.left -= int64(n)
	return n, nil
}

// heapWatcher is a writer that discards what it gets and samples the heap
// every few tens of megabytes.
type heapWatcher struct {
	n, nextSample int64
	peak          uint64
}

func (h *heapWatcher) Write(b []byte) (int, error) {
	h.n += int64(len(b))
	if h.n >= h.nextSample {
		h.nextSample += 32 << 20
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.peak = max(h.peak, ms.HeapAlloc)
	}
	return len(b), nil
}

func TestRoundTripperStreamsA1GiBBodyInFlatHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 1 GiB over loopback")
	}
	const size = 1 << 30
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		io.Copy(w, &patternReader{left: size})
	}))
	t.Cleanup(srv.Close)
	e := newEngine(t, engine.Config{BaseURL: srv.URL, MaxResponseBytes: 1 << 20})

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := e.HTTPClient().Get(srv.URL + "/big")
	require.NoError(t, err)
	defer resp.Body.Close()
	h := &heapWatcher{}
	n, err := io.Copy(h, resp.Body)
	require.NoError(t, err)
	assert.Equal(t, int64(size), n, "the whole body, past MaxResponseBytes")
	growth := int64(h.peak) - int64(before.HeapAlloc)
	t.Logf("heap: %d MiB before, peak growth %d MiB while streaming 1 GiB", before.HeapAlloc>>20, growth>>20)
	assert.Less(t, growth, int64(32<<20), "the heap grew with the body")
}

func TestRoundTripperLeavesRedirectsToTheClientAndTheTokenToItsOrigin(t *testing.T) {
	other := newRecordingServer(t, func(int, *http.Request) int { return 200 })
	var hops atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hops.Add(1)
		switch r.URL.Path {
		case "/a":
			http.Redirect(w, r, "/b", http.StatusFound)
		case "/b":
			assert.Equal(t, "Bearer tok", r.Header.Get("Authorization"), "same-origin hop carries the token")
			http.Redirect(w, r, other.URL+"/c", http.StatusFound)
		}
	}))
	t.Cleanup(api.Close)
	e := newEngine(t, engine.Config{BaseURL: api.URL, Auth: engine.Auth{AccessToken: "tok"}})

	// Under a client that follows nothing, the first 302 comes back as is.
	req, err := http.NewRequest(http.MethodGet, api.URL+"/a", nil)
	require.NoError(t, err)
	resp, err := e.RoundTripper().RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusFound, resp.StatusCode)
	assert.Equal(t, "/b", resp.Header.Get("Location"))
	assert.Equal(t, int64(1), hops.Load())

	// Under HTTPClient, the client follows each hop through the engine.
	status, body, err := get(t, e.HTTPClient(), api.URL+"/a")
	require.NoError(t, err)
	assert.Equal(t, 200, status)
	assert.Equal(t, "answer 1", body)
	_, auths := other.seen()
	assert.Equal(t, []string{""}, auths, "no token to another origin")
}

func TestRoundTripperQueueWaitEndsWithTheRequestContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedAPI()
		defer close(g.release)
		cfg := g.config()
		cfg.Workers, cfg.QueueSize = 1, 1
		e := virtualEngine(t, cfg)
		busy := e.Submit(context.Background(), requests.New("GET", "/busy"))
		synctest.Wait()
		require.EqualValues(t, 1, g.calls.Load(), "the worker is busy")

		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/queued", nil)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			resp, err := e.HTTPClient().Do(req)
			if resp != nil {
				resp.Body.Close()
			}
			done <- err
		}()
		synctest.Wait()
		require.EqualValues(t, 1, e.Stats().Queued, "the request is queued")
		cancel()
		err = <-done
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, int64(1), g.calls.Load(), "the queued request never went out")
		g.release <- struct{}{}
		_, err = busy.Await(context.Background())
		require.NoError(t, err)
	})
}

func TestRoundTripperBodyEndsWithTheRequestContext(t *testing.T) {
	sent := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("first part"))
		w.(http.Flusher).Flush()
		close(sent)
		<-r.Context().Done() // the rest never comes
	}))
	t.Cleanup(srv.Close)
	e := newEngine(t, engine.Config{BaseURL: srv.URL})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/slow", nil)
	require.NoError(t, err)
	resp, err := e.HTTPClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	<-sent
	b := make([]byte, len("first part"))
	_, err = io.ReadFull(resp.Body, b)
	require.NoError(t, err)
	cancel()
	_, err = io.ReadAll(resp.Body)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestRoundTripperJoinsACallFromSubmitButIsNeverShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedAPI()
		e := virtualEngine(t, g.config())
		ctx := context.Background()
		first := e.Submit(ctx, requests.New("GET", "/items"))
		synctest.Wait()
		require.EqualValues(t, 1, g.calls.Load(), "the upstream call")

		type result struct {
			status int
			body   string
			err    error
		}
		results := make(chan result, 3)
		for range 3 {
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/items", nil)
				resp, err := e.RoundTripper().RoundTrip(req)
				if err != nil {
					results <- result{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				results <- result{resp.StatusCode, string(b), err}
			}()
		}
		synctest.Wait()
		require.EqualValues(t, 3, e.Stats().DedupHits, "three joins")
		close(g.release)
		for range 3 {
			r := <-results
			require.NoError(t, r.err)
			assert.Equal(t, 200, r.status)
			assert.Equal(t, `{"n":42}`, r.body)
		}
		_, err := first.Await(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(1), g.calls.Load(), "they joined the call in flight")

		// Streamed requests alone each make their own call.
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				_, _, err := get(t, e.HTTPClient(), g.URL+"/items")
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		assert.Equal(t, int64(4), g.calls.Load())
	})
}

func TestRoundTripperFailsAfterClose(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	e, err := engine.New(engine.Config{BaseURL: srv.URL})
	require.NoError(t, err)
	require.NoError(t, e.Close())
	_, _, err = get(t, e.HTTPClient(), srv.URL+"/x")
	assert.ErrorIs(t, err, errors.ErrClosed)
}

// A retryable answer's body is read a little before the retry decision;
// that read must stay within the attempt's time, or a server that stalls
// after the headers would hold a worker for ever.
func TestRoundTripperStalledErrorBodyTimesOutTheAttempt(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes
	}))
	t.Cleanup(srv.Close)
	e := newEngine(t, engine.Config{BaseURL: srv.URL, Timeout: 50 * time.Millisecond,
		Retry: engine.Retry{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	_, _, err := get(t, e.HTTPClient(), srv.URL+"/stall")
	require.Error(t, err)
	var re *errors.RequestError
	require.ErrorAs(t, err, &re)
	assert.True(t, re.Timeout(), "the attempt timed out: %v", err)
	assert.Equal(t, int64(2), calls.Load(), "and was retried")
}

// TestRoundTripperHonoursTheHostOverride pins that a caller's
// http.Request.Host reaches the server as the Host header (it was dropped
// without a word), with the token only when both the URL and the Host are
// the base URL's origin, and that such a request joins no other.
func TestRoundTripperHonoursTheHostOverride(t *testing.T) {
	type seen struct{ host, auth string }
	var mu sync.Mutex
	var got []seen
	release := make(chan struct{})
	arrived := make(chan struct{}, 8)
	handler := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Host, r.Header.Get("Authorization")})
		mu.Unlock()
		arrived <- struct{}{}
		if r.URL.Path == "/slow" && r.Host != "other.test" {
			<-release
		}
	}
	api := httptest.NewServer(http.HandlerFunc(handler))
	t.Cleanup(api.Close)
	elsewhere := httptest.NewServer(http.HandlerFunc(handler))
	t.Cleanup(elsewhere.Close)
	e := newEngine(t, engine.Config{BaseURL: api.URL, Auth: engine.Auth{AccessToken: "tok"}})
	c := e.HTTPClient()
	apiHost := strings.TrimPrefix(api.URL, "http://")
	last := func() seen {
		mu.Lock()
		defer mu.Unlock()
		return got[len(got)-1]
	}
	send := func(url, host string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxTimeout(t, 10*time.Second), "GET", url, nil)
		require.NoError(t, err)
		req.Host = host
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		<-arrived
	}

	send(api.URL+"/x", "")
	assert.Equal(t, seen{apiHost, "Bearer tok"}, last(), "no override: the URL's host, with the token")
	send(api.URL+"/x", apiHost)
	assert.Equal(t, seen{apiHost, "Bearer tok"}, last(), "the base host named again: with the token")
	send(api.URL+"/x", "other.test")
	assert.Equal(t, seen{"other.test", ""}, last(), "another Host: sent, without the token")
	send(elsewhere.URL+"/x", apiHost)
	assert.Equal(t, seen{apiHost, ""}, last(), "the base host named on a URL to elsewhere: no token there")

	// An identical request in flight without the override is not joined.
	f := e.Submit(context.Background(), requests.New("GET", "/slow"))
	<-arrived
	send(api.URL+"/slow", "other.test")
	assert.Equal(t, seen{"other.test", ""}, last(), "sent on its own, not merged with the call in flight")
	close(release)
	_, err := f.Await(ctxTimeout(t, 10*time.Second))
	require.NoError(t, err)
	assert.Zero(t, e.Stats().DedupHits)
}
