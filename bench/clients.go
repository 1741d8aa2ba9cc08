package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/go-resty/resty/v2"
	"github.com/hashicorp/go-retryablehttp"
	resty3 "resty.dev/v3"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// client is one library under test, set up as a user would for an
// authenticated API: a bearer token and three attempts.
type client struct {
	name  string
	do    func(ctx context.Context) error
	close func()
	// loop, when set, replaces the closed loop of do calls: a client whose
	// natural use is not one call per goroutine (courier's Stream).
	loop func(conc int, d time.Duration) *loopResult
	// batch, when set, replaces do over the no-op transport: it makes n
	// calls its own way (courier's Stream).
	batch func(n int)
}

// transport is the same for every client, so connection pooling is not
// what is compared: enough idle connections for the highest concurrency.
func transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 1024
	return t
}

const token = "bench-token"

// consume reads and closes an answer, as every client must, and fails on a
// status other than 200.
func consume(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func rawClient(base string) client {
	c := &http.Client{Transport: transport()}
	url := base + "/item"
	return client{name: "net/http", do: func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return consume(c.Do(req))
	}, close: c.CloseIdleConnections}
}

func courierClient(base string, workers int) client {
	hc := &http.Client{Transport: transport()}
	e, err := engine.New(engine.Config{BaseURL: base, HTTPClient: hc, Workers: workers,
		Auth: engine.Auth{AccessToken: token}})
	if err != nil {
		panic(err)
	}
	return client{name: "courier", do: func(ctx context.Context) error {
		// WithoutDedup: every call is its own request, as with the others.
		_, err := e.Do(ctx, requests.New("GET", "/item", requests.WithoutDedup()))
		return err
	}, close: func() { e.Close(); hc.CloseIdleConnections() }}
}

// courierStreamClient feeds an endless input through Engine.Stream with
// workers = conc: conc requests in flight at most, as conc goroutines
// calling Do have. With window 0, Stream's default (workers plus queue),
// answers that came before an earlier one wait in the window instead of
// holding back the next submissions (results come out in input order);
// with window conc, a slow answer at the head leaves workers idle.
func courierStreamClient(base string, workers, window int) client {
	hc := &http.Client{Transport: transport()}
	e, err := engine.New(engine.Config{BaseURL: base, HTTPClient: hc, Workers: workers,
		Auth: engine.Auth{AccessToken: token}})
	if err != nil {
		panic(err)
	}
	loop := func(conc int, d time.Duration) *loopResult {
		deadline := time.Now().Add(d)
		reqs := func(yield func(*requests.Request) bool) {
			for time.Now().Before(deadline) {
				if !yield(requests.New("GET", "/item", requests.WithoutDedup())) {
					return
				}
			}
		}
		r := &loopResult{}
		var n int64
		start, cpu0 := time.Now(), cpuTime()
		for res := range e.Stream(context.Background(), reqs, window) {
			if res.Err != nil {
				r.errs++
				continue
			}
			r.lat.Add(res.Response.Duration)
			n++
		}
		r.rps = float64(n) / time.Since(start).Seconds()
		if n > 0 {
			r.cpuPer = (cpuTime() - cpu0) / time.Duration(n)
		}
		return r
	}
	name := "courier Stream"
	if window > 0 {
		name = "courier Stream, window = concurrency"
	}
	return client{name: name, loop: loop, do: func(ctx context.Context) error {
		_, err := e.Do(ctx, requests.New("GET", "/item", requests.WithoutDedup()))
		return err
	}, close: func() { e.Close(); hc.CloseIdleConnections() }}
}

func restyClient(base string) client {
	t := transport()
	c := resty.New().SetTransport(t).SetBaseURL(base).SetAuthToken(token).
		SetRetryCount(2).SetRetryWaitTime(100 * time.Millisecond).SetDisableWarn(true)
	return client{name: "resty v2", do: func(ctx context.Context) error {
		resp, err := c.R().SetContext(ctx).Get("/item")
		if err != nil {
			return err
		}
		if resp.StatusCode() != 200 {
			return fmt.Errorf("status %d", resp.StatusCode())
		}
		return nil
	}, close: t.CloseIdleConnections}
}

func resty3Client(base string) client {
	t := transport()
	c := resty3.New().SetTransport(t).SetBaseURL(base).SetAuthToken(token).
		SetRetryCount(2).SetRetryWaitTime(100 * time.Millisecond).SetLoggerWarnLevel(true)
	return client{name: "resty v3", do: func(ctx context.Context) error {
		resp, err := c.R().SetContext(ctx).Get("/item")
		if err != nil {
			return err
		}
		// resty v3 reads an answer only when asked: unread, its connection
		// is never given back, and the process runs out of descriptors.
		resp.Bytes()
		if resp.StatusCode() != 200 {
			return fmt.Errorf("status %d", resp.StatusCode())
		}
		return nil
	}, close: func() { c.Close(); t.CloseIdleConnections() }}
}

func retryableClient(base string) client {
	c := retryablehttp.NewClient()
	t := transport()
	c.HTTPClient = &http.Client{Transport: t}
	c.RetryMax = 2
	c.Logger = nil
	url := base + "/item"
	return client{name: "go-retryablehttp", do: func(ctx context.Context) error {
		req, err := retryablehttp.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return consume(c.Do(req))
	}, close: t.CloseIdleConnections}
}

// failsafeClient is net/http with failsafe-go's HTTP retry policy (three
// attempts) as its RoundTripper.
func failsafeClient(base string) client {
	t := transport()
	policy := failsafehttp.NewRetryPolicyBuilder().WithMaxRetries(2).WithBackoff(100*time.Millisecond, 10*time.Second).Build()
	c := &http.Client{Transport: failsafehttp.NewRoundTripper(t, policy)}
	url := base + "/item"
	return client{name: "failsafe-go", do: func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return consume(c.Do(req))
	}, close: t.CloseIdleConnections}
}

// clients returns every library under test for a concurrency level,
// net/http first.
func clients(base string, concurrency int) []client {
	all := []client{rawClient(base), courierClient(base, concurrency), courierStreamClient(base, concurrency, 0),
		courierStreamClient(base, concurrency, concurrency),
		restyClient(base), resty3Client(base), retryableClient(base), failsafeClient(base)}
	if *only1 == "" {
		return all
	}
	out := all[:1]
	for _, c := range all[1:] {
		if strings.Contains(strings.ReplaceAll(c.name, "-", ""), *only1) {
			out = append(out, c)
		} else {
			c.close()
		}
	}
	return out
}

// noop answers every request at once without a network: what is measured
// is the client's own cost.
type noop struct{}

func (noop) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(`{"ok":true}`)),
		ContentLength: 11, Request: r,
	}, nil
}
