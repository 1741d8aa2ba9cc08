package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
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

// distinctQuery gives every request a query of its own, so that with
// dedup on none is merged and the dedup table's cost is what shows.
var distinctSeq atomic.Int64

func distinctQuery() requests.Option {
	return requests.WithQuery("n", strconv.FormatInt(distinctSeq.Add(1), 10))
}

// courierClient is one of courier's entry points: Do, Submit then Await,
// or a request through HTTPClient (the RoundTripper); with dedup off (every
// call its own request, as with the others) or on (the default GET, each
// with a query of its own).
func courierClient(base string, workers int, entry string, dedup bool) client {
	hc := &http.Client{Transport: transport()}
	e, err := engine.New(engine.Config{BaseURL: base, HTTPClient: hc, Workers: workers,
		Auth: engine.Auth{AccessToken: token}, Dedup: engine.Dedup{Disabled: !dedup}})
	if err != nil {
		panic(err)
	}
	opt := func() requests.Option { return func(*requests.Request) {} }
	if dedup {
		opt = distinctQuery
	}
	name := "courier " + entry + ", dedup off"
	if dedup {
		name = "courier " + entry + ", dedup on"
	}
	var do func(ctx context.Context) error
	switch entry {
	case "Do":
		do = func(ctx context.Context) error {
			_, err := e.Do(ctx, requests.New("GET", "/item", opt()))
			return err
		}
	case "Submit/Await":
		do = func(ctx context.Context) error {
			_, err := e.Submit(ctx, requests.New("GET", "/item", opt())).Await(ctx)
			return err
		}
	case "RoundTripper":
		c := e.HTTPClient()
		do = func(ctx context.Context) error {
			u := base + "/item"
			if dedup {
				u += "?n=" + strconv.FormatInt(distinctSeq.Add(1), 10)
			}
			req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
			if err != nil {
				return err
			}
			return consume(c.Do(req))
		}
	}
	return client{name: name, do: do, close: func() { e.Close(); hc.CloseIdleConnections() }}
}

// courierStreamClient feeds an endless input through Engine.Stream with
// workers = conc: conc requests in flight at most, as conc goroutines
// calling Do have. With window 0, Stream's default (workers plus queue),
// answers that came before an earlier one wait in the window instead of
// holding back the next submissions (results come out in input order);
// with window conc, a slow answer at the head leaves workers idle.
func courierStreamClient(base string, workers, window int, dedup bool) client {
	hc := &http.Client{Transport: transport()}
	e, err := engine.New(engine.Config{BaseURL: base, HTTPClient: hc, Workers: workers,
		Auth: engine.Auth{AccessToken: token}, Dedup: engine.Dedup{Disabled: !dedup}})
	if err != nil {
		panic(err)
	}
	loop := func(conc int, d time.Duration) *loopResult {
		deadline := time.Now().Add(d)
		reqs := func(yield func(*requests.Request) bool) {
			for time.Now().Before(deadline) {
				opt := requests.WithoutDedup()
				if dedup {
					opt = distinctQuery()
				}
				if !yield(requests.New("GET", "/item", opt)) {
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
	name := "courier Stream, dedup off"
	if dedup {
		name = "courier Stream, dedup on"
	}
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
	all := []client{rawClient(base)}
	for _, entry := range []string{"Do", "Submit/Await", "RoundTripper"} {
		for _, dedup := range []bool{false, true} {
			all = append(all, courierClient(base, concurrency, entry, dedup))
		}
	}
	all = append(all, courierStreamClient(base, concurrency, 0, false), courierStreamClient(base, concurrency, 0, true),
		courierStreamClient(base, concurrency, concurrency, false),
		restyClient(base), resty3Client(base), retryableClient(base), failsafeClient(base))
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
