// Package itemsapi is a client for the demo API's items, in the shape
// oapi-codegen generates: it sends every request through an
// [HttpRequestDoer], so any *http.Client, or courier's
// (*engine.Engine).HTTPClient(), can carry it. Nothing in it knows about
// tokens, retries or pacing.
package itemsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// HttpRequestDoer performs HTTP requests; the name is the one generated
// clients use.
type HttpRequestDoer interface {
	Do(req *http.Request) (*http.Response, error)
}

// Item is an item of the API.
type Item struct {
	ID    string  `json:"id"`
	Name  string  `json:"name"`
	Price float64 `json:"price"`
}

// NewItem is the body of CreateItem.
type NewItem struct {
	Name  string  `json:"name"`
	Price float64 `json:"price"`
}

// Created is CreateItem's answer.
type Created struct {
	ID   int64   `json:"id"`
	Item NewItem `json:"item"`
}

// RequestEditorFn changes a request before it is sent.
type RequestEditorFn func(ctx context.Context, req *http.Request) error

// Client calls the API at Server through Client. The zero value is not
// usable; call NewClient.
type Client struct {
	Server         string // the API's base URL, with a trailing slash
	Client         HttpRequestDoer
	RequestEditors []RequestEditorFn
}

// ClientOption configures a Client.
type ClientOption func(*Client) error

// WithHTTPClient sends every request through doer.
func WithHTTPClient(doer HttpRequestDoer) ClientOption {
	return func(c *Client) error { c.Client = doer; return nil }
}

// WithRequestEditorFn adds fn to every request.
func WithRequestEditorFn(fn RequestEditorFn) ClientOption {
	return func(c *Client) error { c.RequestEditors = append(c.RequestEditors, fn); return nil }
}

// NewClient returns a client for server; without WithHTTPClient it uses
// http.DefaultClient.
func NewClient(server string, opts ...ClientOption) (*Client, error) {
	c := &Client{Server: server}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if !strings.HasSuffix(c.Server, "/") {
		c.Server += "/"
	}
	if c.Client == nil {
		c.Client = http.DefaultClient
	}
	return c, nil
}

// GetItem asks for the item id.
func (c *Client) GetItem(ctx context.Context, id string, editors ...RequestEditorFn) (*http.Response, error) {
	u, err := url.Parse(c.Server + "items/" + url.PathEscape(id))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, req, editors)
}

// CreateItem posts body. The body is a bytes.Reader, so the request can be
// sent again (http.NewRequest sets GetBody).
func (c *Client) CreateItem(ctx context.Context, body NewItem, editors ...RequestEditorFn) (*http.Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Server+"items", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(ctx, req, editors)
}

func (c *Client) do(ctx context.Context, req *http.Request, editors []RequestEditorFn) (*http.Response, error) {
	for _, fn := range append(append([]RequestEditorFn(nil), c.RequestEditors...), editors...) {
		if err := fn(ctx, req); err != nil {
			return nil, err
		}
	}
	return c.Client.Do(req)
}

// ClientWithResponses wraps Client with methods that parse the answers.
type ClientWithResponses struct{ *Client }

// NewClientWithResponses is NewClient with parsing methods.
func NewClientWithResponses(server string, opts ...ClientOption) (*ClientWithResponses, error) {
	c, err := NewClient(server, opts...)
	if err != nil {
		return nil, err
	}
	return &ClientWithResponses{c}, nil
}

// GetItemResponse is GetItem's parsed answer: JSON200 is set on a 200.
type GetItemResponse struct {
	Body         []byte
	HTTPResponse *http.Response
	JSON200      *Item
}

// StatusCode is the answer's status.
func (r *GetItemResponse) StatusCode() int { return r.HTTPResponse.StatusCode }

// GetItemWithResponse asks for the item id and parses the answer.
func (c *ClientWithResponses) GetItemWithResponse(ctx context.Context, id string, editors ...RequestEditorFn) (*GetItemResponse, error) {
	rsp, err := c.GetItem(ctx, id, editors...)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if err != nil {
		return nil, err
	}
	r := &GetItemResponse{Body: body, HTTPResponse: rsp}
	if rsp.StatusCode == http.StatusOK {
		var it Item
		if err := json.Unmarshal(body, &it); err != nil {
			return nil, fmt.Errorf("itemsapi: GetItem: %w", err)
		}
		r.JSON200 = &it
	}
	return r, nil
}

// CreateItemResponse is CreateItem's parsed answer: JSON201 is set on a 201.
type CreateItemResponse struct {
	Body         []byte
	HTTPResponse *http.Response
	JSON201      *Created
}

// StatusCode is the answer's status.
func (r *CreateItemResponse) StatusCode() int { return r.HTTPResponse.StatusCode }

// CreateItemWithResponse posts body and parses the answer.
func (c *ClientWithResponses) CreateItemWithResponse(ctx context.Context, body NewItem, editors ...RequestEditorFn) (*CreateItemResponse, error) {
	rsp, err := c.CreateItem(ctx, body, editors...)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if err != nil {
		return nil, err
	}
	r := &CreateItemResponse{Body: b, HTTPResponse: rsp}
	if rsp.StatusCode == http.StatusCreated {
		var cr Created
		if err := json.Unmarshal(b, &cr); err != nil {
			return nil, fmt.Errorf("itemsapi: CreateItem: %w", err)
		}
		r.JSON201 = &cr
	}
	return r, nil
}
