package requests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// Body is a request body that can be sent more than once. The engine calls
// Open once per attempt and closes what it returns.
//
// Implementations must be safe for concurrent use: a deduplicated or retried
// request may open its body again while an earlier reader is being closed.
type Body interface {
	// Open returns a reader positioned at byte 0 of the body.
	Open() (io.ReadCloser, error)
	// ContentType is the Content-Type header value, or "" to leave it unset.
	ContentType() string
	// Size is the exact length in bytes, or -1 when it is not known in
	// advance (the body is then sent chunked).
	Size() int64
}

// Digester is implemented by bodies whose bytes are cheap to hash, so the
// engine can tell identical requests apart for deduplication. Bodies that do
// not implement it make a request unique unless it carries a dedup key.
type Digester interface {
	Bytes() []byte
}

type bytesBody struct {
	b  []byte
	ct string
}

func (b *bytesBody) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.b)), nil }
func (b *bytesBody) ContentType() string          { return b.ct }
func (b *bytesBody) Size() int64                  { return int64(len(b.b)) }
func (b *bytesBody) Bytes() []byte                { return b.b }

// BytesBody returns a Body that sends b with the given content type. The
// engine does not copy b: do not change it while the request is pending.
func BytesBody(b []byte, contentType string) Body {
	return &bytesBody{b: b, ct: contentType}
}

// JSONBody returns a Body holding v encoded as JSON, or an error naming what
// could not be encoded.
func JSONBody(v any) (Body, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("requests: JSON body: %w", err)
	}
	return BytesBody(b, "application/json"), nil
}

// FormBody returns a Body holding v URL-encoded, as an HTML form posts it.
func FormBody(v url.Values) Body {
	return BytesBody([]byte(v.Encode()), "application/x-www-form-urlencoded")
}

// StringBody is shorthand for BytesBody([]byte(s), contentType).
func StringBody(s string, contentType string) Body {
	return BytesBody([]byte(strings.Clone(s)), contentType)
}

type funcBody struct {
	open func() (io.ReadCloser, error)
	ct   string
	size int64
}

func (b *funcBody) Open() (io.ReadCloser, error) { return b.open() }
func (b *funcBody) ContentType() string          { return b.ct }
func (b *funcBody) Size() int64                  { return b.size }

// ReopenBody returns a Body that calls open for every attempt, so a large
// body (a file, say) is streamed rather than held in memory. size is the
// exact length, or -1 when unknown.
func ReopenBody(open func() (io.ReadCloser, error), contentType string, size int64) Body {
	return &funcBody{open: open, ct: contentType, size: size}
}
