package couriertest

import (
	"bytes"
	"hash/fnv"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault is one scripted misbehaviour of the API, for [WithFaults]. The
// zero Fault is [Pass]. A Fault is a plain value.
type Fault struct {
	kind       faultKind
	status     int
	retryAfter time.Duration // with hasRetry: the wait the answer asks for
	hasRetry   bool
	asDate     bool          // Retry-After as an HTTP date, not seconds
	slow       time.Duration // kindSlow: the time the body takes
}

type faultKind int

const (
	kindPass faultKind = iota
	kindStatus
	kindReset
	kindSlow
)

// Pass is no fault: the request gets its real answer. It keeps a place
// in a script: WithFaults(p, Unavailable(0), Pass(), Reset()).
func Pass() Fault { return Fault{} }

// Status answers with the status code code and a JSON error body, without
// serving the request.
func Status(code int) Fault { return Fault{kind: kindStatus, status: code} }

// Unavailable is shorthand for Status(503).WithRetryAfter(retryAfter).
func Unavailable(retryAfter time.Duration) Fault { return Status(503).WithRetryAfter(retryAfter) }

// TooManyRequests is shorthand for Status(429).WithRetryAfter(retryAfter).
func TooManyRequests(retryAfter time.Duration) Fault { return Status(429).WithRetryAfter(retryAfter) }

// WithRetryAfter returns f with a Retry-After header of d in whole
// seconds, rounded up; a d of zero or less sends no header.
func (f Fault) WithRetryAfter(d time.Duration) Fault {
	f.retryAfter, f.hasRetry, f.asDate = d, d > 0, false
	return f
}

// WithRetryAfterDate returns f with a Retry-After header that is an HTTP
// date d from now by the server's clock (whole seconds, as HTTP dates
// are).
func (f Fault) WithRetryAfterDate(d time.Duration) Fault {
	f.retryAfter, f.hasRetry, f.asDate = d, true, true
	return f
}

// Reset closes the connection without an answer, with a TCP reset where
// the connection is TCP: the client sees a connection error. (net/http's
// Transport resends an idempotent request by itself when a connection it
// reused is reset, so a client may see the next answer instead; the
// server's counters see both.)
func Reset() Fault { return Fault{kind: kindReset} }

// SlowBody serves the real answer with its body sent in four pieces over
// d, flushed one by one: a client's read deadline or per-attempt timeout
// can meet it mid-body.
func SlowBody(d time.Duration) Fault { return Fault{kind: kindSlow, slow: max(d, 0)} }

// script is one WithFaults pattern and the requests it has seen.
type script struct {
	method, path string
	faults       []Fault
	seen         map[string]int // path -> requests so far; protected by API.mu
}

func (sc *script) matches(r *http.Request) bool {
	if sc.method != "" && sc.method != r.Method {
		return false
	}
	if strings.HasSuffix(sc.path, "/") {
		return strings.HasPrefix(r.URL.Path, sc.path)
	}
	return r.URL.Path == sc.path
}

// faultFor returns the fault scripted for r, and counts r against the
// script of the longest pattern that matches it.
func (a *API) faultFor(r *http.Request) (Fault, bool) {
	var best *script
	for _, sc := range a.cfg.scripts {
		if sc.matches(r) && (best == nil || len(sc.path) > len(best.path)) {
			best = sc
		}
	}
	if best == nil {
		return Fault{}, false
	}
	a.mu.Lock()
	if best.seen == nil {
		best.seen = map[string]int{}
	}
	n := best.seen[r.URL.Path]
	best.seen[r.URL.Path] = n + 1
	a.mu.Unlock()
	if n >= len(best.faults) {
		return Fault{}, false
	}
	return best.faults[n], true
}

// serveFault answers r as f says; next serves the real answer.
func (a *API) serveFault(w http.ResponseWriter, r *http.Request, f Fault, next http.Handler) {
	switch f.kind {
	case kindStatus:
		a.faults.Add(1)
		if f.hasRetry {
			w.Header().Set("Retry-After", a.retryAfter(f.retryAfter, f.asDate))
		}
		writeJSON(w, f.status, apiError{"scripted", "a scripted " + strconv.Itoa(f.status)})
	case kindReset:
		a.faults.Add(1)
		a.resetConn(w)
	case kindSlow:
		a.faults.Add(1)
		serveSlowly(w, r, f.slow, next)
	default:
		next.ServeHTTP(w, r)
	}
}

// retryAfter formats a Retry-After of d: whole seconds rounded up, or the
// HTTP date d from now.
func (a *API) retryAfter(d time.Duration, asDate bool) string {
	if asDate {
		return a.cfg.now().Add(d).UTC().Format(http.TimeFormat)
	}
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10)
}

// resetConn drops the connection under w without an answer.
func (a *API) resetConn(w http.ResponseWriter) {
	a.resets.Add(1)
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // HTTP/2 or a recorder: abort the stream
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // send RST, not FIN
	}
	conn.Close()
}

// serveSlowly serves next's answer with its body in four pieces over d.
func serveSlowly(w http.ResponseWriter, r *http.Request, d time.Duration, next http.Handler) {
	var buf bufferedAnswer
	buf.header = http.Header{}
	next.ServeHTTP(&buf, r)
	for k, v := range buf.header {
		w.Header()[k] = v
	}
	body := buf.body.Bytes()
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(cmpStatus(buf.status))
	const pieces = 4
	step := max((len(body)+pieces-1)/pieces, 1)
	fl, _ := w.(http.Flusher)
	for i := 0; i < len(body); i += step {
		w.Write(body[i:min(i+step, len(body))])
		if fl != nil {
			fl.Flush()
		}
		t := time.NewTimer(d / pieces)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
}

func cmpStatus(s int) int {
	if s == 0 {
		return http.StatusOK
	}
	return s
}

// bufferedAnswer is an http.ResponseWriter that keeps the answer.
type bufferedAnswer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedAnswer) Header() http.Header { return b.header }
func (b *bufferedAnswer) WriteHeader(s int) {
	if b.status == 0 {
		b.status = s
	}
}
func (b *bufferedAnswer) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

// flakyFault is the fault GET /flaky/{id} answers on its first attempt
// for the share of ids WithFlakyPercent sets.
func (a *API) flakyFault(id string) (Fault, bool) {
	h := fnv.New32a()
	h.Write([]byte(id))
	v := h.Sum32()
	if int(v%100) >= a.cfg.flakyPercent {
		return Fault{}, false
	}
	switch v % 3 {
	case 0:
		return Unavailable(time.Second), true
	case 1:
		return Status(503).WithRetryAfterDate(time.Second), true
	default:
		return TooManyRequests(time.Second), true
	}
}
