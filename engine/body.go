package engine

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/courier-go/courier/errors"
)

// Reading bodies into memory, bounded. The bound is on what is held: the
// body as read from the transport, after the transport has undone any
// compression it asked for, so a gzip bomb meets the same limit as any
// other body. A body past the limit fails with ErrResponseTooLarge having
// cost about the limit, never a multiple of it: nothing is read ahead and
// nothing is copied while the body grows.

// maxChunk is the largest piece a body of unknown length is read in.
const maxChunk = 1 << 20

// readBody reads the response body, at most limit bytes. A body whose
// Content-Length is announced is read into one buffer of that size (or
// fails at once when the length is over the limit); atEnd then reports
// that it was read to its end, so closing it needs no drain.
func readBody(resp *http.Response, limit int64) (b []byte, atEnd bool, err error) {
	n := resp.ContentLength
	if resp.Request != nil && resp.Request.Method == http.MethodHead {
		// A HEAD's Content-Length is that of the body a GET would get;
		// the answer itself has none.
		return nil, true, nil
	}
	switch {
	case n > limit:
		return nil, false, tooLarge(limit)
	case n < 0:
		b, err = readBounded(resp.Body, limit)
		return b, false, err
	case n == 0:
		// Empty, as net/http's transport reports it; but a RoundTripper of
		// the caller's (a middleware, a test double) may leave 0 on a body
		// it did not measure. One byte tells.
		probe := make([]byte, 1)
		if k, _ := io.ReadFull(resp.Body, probe); k == 0 {
			return nil, true, nil
		}
		b, err = readBounded(io.MultiReader(bytes.NewReader(probe), resp.Body), limit)
		return b, false, err
	}
	b = make([]byte, n)
	if _, err := io.ReadFull(resp.Body, b); err != nil {
		return nil, false, fmt.Errorf("reading body: %w", err)
	}
	return b, true, nil
}

// readBounded reads at most limit bytes of r, failing with
// ErrResponseTooLarge when there are more. It reads in pieces that grow
// from 512 bytes to maxChunk and joins them once at the end, so a body that
// turns out too large has cost the limit and one piece, and one that fits
// costs its size (twice, for an instant, when it took more than a piece).
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	var (
		pieces [][]byte
		total  int64
		size   int64 = 512
	)
	for {
		// Never ask for more than one byte past the limit in all.
		p := make([]byte, min(size, limit+1-total))
		n, err := io.ReadFull(r, p)
		total += int64(n)
		if n > 0 {
			pieces = append(pieces, p[:n])
		}
		if total > limit {
			return nil, tooLarge(limit)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading body: %w", err)
		}
		size = min(2*size, maxChunk)
	}
	switch len(pieces) {
	case 0:
		return []byte{}, nil
	case 1:
		return pieces[0], nil
	}
	b := make([]byte, 0, total)
	for i, p := range pieces {
		b = append(b, p...)
		pieces[i] = nil // the collector may take it back at once
	}
	return b, nil
}

func tooLarge(limit int64) error {
	return fmt.Errorf("%w: more than %d bytes", errors.ErrResponseTooLarge, limit)
}
