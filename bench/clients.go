package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-resty/resty/v2"
	"github.com/hashicorp/go-retryablehttp"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/requests"
)

// client is one library under test, set up as a user would for an
// authenticated API: a bearer token and three attempts.
type client struct {
	name  string
	do    func(ctx context.Context) error
	close func()
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

func restyClient(base string) client {
	t := transport()
	c := resty.New().SetTransport(t).SetBaseURL(base).SetAuthToken(token).
		SetRetryCount(2).SetRetryWaitTime(100 * time.Millisecond)
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

// clients returns every library under test for a concurrency level.
func clients(base string, concurrency int) []client {
	all := []client{rawClient(base), courierClient(base, concurrency), restyClient(base), retryableClient(base)}
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
