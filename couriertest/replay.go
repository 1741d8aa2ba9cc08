package couriertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/courier-go/courier/internal/redact"
)

// Replay returns a RoundTripper that answers from the exchanges [Record]
// wrote to dir, without a network. A request matches a recorded one with
// the same method, the same URL and the same body, each compared after
// the redaction Record applies (give Replay the options Record had), so
// credentials, which change between runs, take no part in it; other
// headers are not compared. Exchanges that match the same request are
// answered in the order they were recorded (a 401, then the 200 after a
// refresh), and the last one again once all have been used. A recorded
// transport error is returned as an error again.
//
// A request that matches nothing fails with a [*MissError] naming its
// method and its URL without the query. If dir cannot be read, every
// request fails with that error. The RoundTripper is safe for concurrent
// use.
func Replay(dir string, opts ...RedactOption) http.RoundTripper {
	return &replayer{dir: dir, red: newRedactor(opts)}
}

// MissError is the error of a request that [Replay] has no recorded
// exchange for.
type MissError struct {
	Method string
	// URL is the request's URL cut down to scheme, host and path.
	URL string
	// BodySHA256 is the digest of the request's redacted body.
	BodySHA256 string
	// Dir is the directory of recordings.
	Dir string
	// Near counts the exchanges recorded for the same method and path
	// with another query or body.
	Near int
}

func (e *MissError) Error() string {
	msg := fmt.Sprintf("couriertest: replay: no recorded exchange for %s %s in %s", e.Method, e.URL, e.Dir)
	if e.Near > 0 {
		msg += fmt.Sprintf(" (%d recorded for %s %s with another query or body)", e.Near, e.Method, e.URL)
	}
	return msg
}

type replayer struct {
	dir string
	red *redactor

	once    sync.Once
	loadErr error            // set once by load
	byKey   map[string]*tape // set once by load; each tape protected by mu
	near    map[string]int   // set once by load: exchanges per method and path

	mu sync.Mutex // protects every tape's next
}

// tape is the exchanges recorded for one key, in order.
type tape struct {
	exchanges []*exchange
	next      int // protected by replayer.mu
}

func matchKey(method, rawURL, bodyDigest string) string {
	return method + " " + rawURL + " " + bodyDigest
}

func nearKey(method, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return method + " " + rawURL
	}
	return method + " " + redact.URL(u)
}

func (rp *replayer) load() {
	rp.byKey, rp.near = map[string]*tape{}, map[string]int{}
	names, err := exchangeFiles(rp.dir)
	if err != nil {
		rp.loadErr = fmt.Errorf("couriertest: replay: %w", err)
		return
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(rp.dir, name))
		if err != nil {
			rp.loadErr = fmt.Errorf("couriertest: replay: %w", err)
			return
		}
		ex := new(exchange)
		if err := json.Unmarshal(b, ex); err != nil {
			rp.loadErr = fmt.Errorf("couriertest: replay: %s: %w", name, err)
			return
		}
		k := matchKey(ex.Request.Method, ex.Request.URL, ex.Request.BodySHA256)
		if rp.byKey[k] == nil {
			rp.byKey[k] = &tape{}
		}
		rp.byKey[k].exchanges = append(rp.byKey[k].exchanges, ex)
		rp.near[nearKey(ex.Request.Method, ex.Request.URL)]++
	}
}

func (rp *replayer) RoundTrip(r *http.Request) (*http.Response, error) {
	body, err := readBody(r)
	if r.Body != nil {
		r.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("couriertest: replay: reading the request body: %w", err)
	}
	rp.once.Do(rp.load)
	if rp.loadErr != nil {
		return nil, rp.loadErr
	}
	method, rawURL := methodOf(r), rp.red.url(r.URL)
	sum := digest(rp.red.body(r.Header.Get("Content-Type"), body))
	tp := rp.byKey[matchKey(method, rawURL, sum)]
	if tp == nil {
		return nil, &MissError{Method: method, URL: redact.URL(r.URL), BodySHA256: sum, Dir: rp.dir,
			Near: rp.near[nearKey(method, rawURL)]}
	}
	rp.mu.Lock()
	ex := tp.exchanges[min(tp.next, len(tp.exchanges)-1)]
	tp.next++
	rp.mu.Unlock()
	if ex.Response == nil {
		return nil, &ReplayedError{Msg: ex.Error}
	}
	respBody, err := getBody(ex.Response.Body, ex.Response.BodyBase64)
	if err != nil {
		return nil, fmt.Errorf("couriertest: replay: %s %s: %w", method, redact.URL(r.URL), err)
	}
	h := ex.Response.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if method == http.MethodHead {
		respBody = nil
	}
	h.Set("Content-Length", strconv.Itoa(len(respBody)))
	st := ex.Response.Status
	return &http.Response{
		Status: strconv.Itoa(st) + " " + http.StatusText(st), StatusCode: st,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(respBody)), ContentLength: int64(len(respBody)),
		Request: r,
	}, nil
}

// ReplayedError is a transport error that [Record] recorded in place of
// an answer, returned again by [Replay].
type ReplayedError struct {
	// Msg is the recorded error's message, redacted.
	Msg string
}

func (e *ReplayedError) Error() string { return "couriertest: replayed transport error: " + e.Msg }
