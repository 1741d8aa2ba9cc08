package couriertest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// exchange is one recorded request and its answer (or the error that
// came instead), as a file holds it.
type exchange struct {
	Request  recordedRequest   `json:"request"`
	Response *recordedResponse `json:"response,omitempty"`
	Error    string            `json:"error,omitempty"`
}

type recordedRequest struct {
	Method     string      `json:"method"`
	URL        string      `json:"url"`
	Header     http.Header `json:"header,omitempty"`
	Body       string      `json:"body,omitempty"`
	BodyBase64 string      `json:"body_base64,omitempty"`
	BodySHA256 string      `json:"body_sha256"` // of the redacted body
}

type recordedResponse struct {
	Status     int         `json:"status"`
	Header     http.Header `json:"header,omitempty"`
	Body       string      `json:"body,omitempty"`
	BodyBase64 string      `json:"body_base64,omitempty"`
}

// setBody stores b as text when it is UTF-8, else as base64.
func setBody(text, b64 *string, b []byte) {
	if utf8.Valid(b) {
		*text = string(b)
	} else {
		*b64 = base64.StdEncoding.EncodeToString(b)
	}
}

func getBody(text, b64 string) ([]byte, error) {
	if b64 != "" {
		return base64.StdEncoding.DecodeString(b64)
	}
	return []byte(text), nil
}

// Record returns a RoundTripper that sends each request through next
// (http.DefaultTransport if nil) and writes the exchange to a file in dir,
// which it creates if need be: NNNN-METHOD-path.json, numbered on from the
// files already there, in the order the answers came. What it writes is
// redacted: the values of Authorization, Proxy-Authorization, Cookie,
// Set-Cookie and engine.DefaultSensitiveHeaders, user info and sensitive
// query parameters in URLs, sensitive form and JSON fields in bodies (see
// [RedactFields]), and every value redacted once wherever else it shows
// up. The caller gets the real answer. A failure to write the file fails
// the request with an error that says so (after the exchange happened).
//
// Bodies are read whole, so Record is for tests, not for streaming. The
// RoundTripper is safe for concurrent use if next is.
func Record(dir string, next http.RoundTripper, opts ...RedactOption) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &recorder{dir: dir, next: next, red: newRedactor(opts)}
}

type recorder struct {
	dir  string
	next http.RoundTripper
	red  *redactor

	mu      sync.Mutex // protects seq and started
	seq     int        // the number of the last file written
	started bool       // seq has been read from dir
}

// readBody returns r's body, leaving r able to send it again: through
// GetBody if r has one, else from a copy.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.GetBody != nil {
		rc, err := r.GetBody()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	return io.ReadAll(r.Body)
}

func (rec *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	body, err := readBody(r)
	if r.Body != nil {
		r.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("couriertest: record: reading the request body: %w", err)
	}
	out := r.Clone(r.Context())
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	ex := rec.request(r, body)

	resp, rtErr := rec.next.RoundTrip(out)
	if rtErr != nil {
		ex.Error = rtErr.Error()
	} else {
		respBody, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(respBody))
		ex.Response = &recordedResponse{Status: resp.StatusCode, Header: rec.red.header(resp.Header)}
		ex.Response.Header.Del("Content-Length")
		setBody(&ex.Response.Body, &ex.Response.BodyBase64, rec.red.body(resp.Header.Get("Content-Type"), respBody))
	}
	if err := rec.write(ex); err != nil {
		return nil, err
	}
	return resp, rtErr
}

// request is the redacted record of r, whose body is body.
func (rec *recorder) request(r *http.Request, body []byte) *exchange {
	red := rec.red.body(r.Header.Get("Content-Type"), body)
	ex := &exchange{Request: recordedRequest{
		Method: methodOf(r), URL: rec.red.url(r.URL), Header: rec.red.header(r.Header), BodySHA256: digest(red),
	}}
	setBody(&ex.Request.Body, &ex.Request.BodyBase64, red)
	return ex
}

func methodOf(r *http.Request) string {
	if r.Method == "" {
		return http.MethodGet
	}
	return r.Method
}

// write scrubs ex of every secret seen so far and writes it to the next
// file.
func (rec *recorder) write(ex *exchange) error {
	rec.scrub(ex)
	b, err := json.MarshalIndent(ex, "", "  ")
	if err != nil {
		return fmt.Errorf("couriertest: record: %w", err)
	}
	b = append(b, '\n')
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !rec.started {
		if err := os.MkdirAll(rec.dir, 0o755); err != nil {
			return fmt.Errorf("couriertest: record: %w", err)
		}
		names, err := exchangeFiles(rec.dir)
		if err != nil {
			return fmt.Errorf("couriertest: record: %w", err)
		}
		if len(names) > 0 {
			rec.seq = seqOf(names[len(names)-1])
		}
		rec.started = true
	}
	rec.seq++
	name := fmt.Sprintf("%04d-%s-%s.json", rec.seq, ex.Request.Method, slug(ex.Request.URL))
	if err := os.WriteFile(filepath.Join(rec.dir, name), b, 0o644); err != nil {
		return fmt.Errorf("couriertest: record: %w", err)
	}
	return nil
}

// scrub replaces every secret seen so far wherever ex quotes it as text:
// the URL, header values, text bodies and the error. The digest is left
// alone, as a secret that happened to be a piece of it is none there.
func (rec *recorder) scrub(ex *exchange) {
	red := rec.red
	ex.Request.URL = red.scrub(ex.Request.URL)
	ex.Error = red.scrub(ex.Error)
	ex.Request.Body = red.scrub(ex.Request.Body)
	headers := []http.Header{ex.Request.Header}
	if ex.Response != nil {
		ex.Response.Body = red.scrub(ex.Response.Body)
		headers = append(headers, ex.Response.Header)
	}
	for _, h := range headers {
		for _, vs := range h {
			for i, v := range vs {
				vs[i] = red.scrub(v)
			}
		}
	}
}

var exchangeName = regexp.MustCompile(`^[0-9]{4,}-[A-Z]+-.*\.json$`)

// exchangeFiles lists the exchange files in dir, in their order.
func exchangeFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && exchangeName.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Slice(names, func(i, j int) bool { return seqOf(names[i]) < seqOf(names[j]) })
	return names, nil
}

func seqOf(name string) int {
	n, _ := strconv.Atoi(name[:strings.IndexByte(name, '-')])
	return n
}

var notSlug = regexp.MustCompile(`[^A-Za-z0-9]+`)

// slug is a short file-name form of a URL's path.
func slug(rawURL string) string {
	p := rawURL
	if i := strings.Index(p, "://"); i >= 0 {
		p = p[i+3:]
		if j := strings.IndexByte(p, '/'); j >= 0 {
			p = p[j:]
		} else {
			p = ""
		}
	}
	p, _, _ = strings.Cut(p, "?")
	s := strings.Trim(notSlug.ReplaceAllString(p, "-"), "-")
	if len(s) > 60 {
		s = s[:60]
	}
	if s == "" {
		s = "root"
	}
	return s
}
