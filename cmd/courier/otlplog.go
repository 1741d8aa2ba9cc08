package main

import (
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
)

// otlpErrorInterval is how often one kind of OpenTelemetry error is told
// at most: a dead collector fails every export, every few seconds.
const otlpErrorInterval = time.Minute

// otlpMaxKinds bounds the kinds of error an otlpErrors keeps apart; past
// it, new kinds share one count.
const otlpMaxKinds = 32

// otlpErrors is where the OpenTelemetry SDK's errors go instead of the
// standard logger (otel.SetErrorHandler, otel.SetLogger): each kind of
// error (its message with the numbers left out) is told once per interval,
// with how many like it were left untold since, and the rest is counted;
// flush tells what is left at the end. Lines go to the logger at error
// level when fetch logs (it does by default), else, with --log-level off,
// to w as fetch's own lines. It is safe for concurrent use: the
// SDK reports from its export goroutines.
type otlpErrors struct {
	w        io.Writer
	log      *zerolog.Logger // nil: plain lines on w
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex           // protects kinds
	kinds map[string]*otlpKind // by message, numbers left out
}

// otlpKind is one kind of error; owned by otlpErrors.mu.
type otlpKind struct {
	told   time.Time // when it was last told
	untold int       // like it since, not told
	last   string    // the latest message, for flush
}

func newOTLPErrors(w io.Writer, log *zerolog.Logger) *otlpErrors {
	return &otlpErrors{w: w, log: log, interval: otlpErrorInterval, now: time.Now, kinds: map[string]*otlpKind{}}
}

var (
	digits = regexp.MustCompile(`[0-9]+`)
	// urlSecrets are the parts of a URL in an error that may hold a
	// secret: user info, and a query or fragment.
	urlUserInfo = regexp.MustCompile(`(\w+://)[^/\s"@]*@`)
	urlQuery    = regexp.MustCompile(`(\w+://[^\s"?#]*)[?#][^\s"]*`)
)

// redactOTLP cuts user info and queries from the URLs in msg.
func redactOTLP(msg string) string {
	msg = urlUserInfo.ReplaceAllString(msg, "$1")
	return urlQuery.ReplaceAllString(msg, "$1")
}

// Handle implements otel.ErrorHandler.
func (h *otlpErrors) Handle(err error) {
	if err == nil {
		return
	}
	h.report(err.Error())
}

func (h *otlpErrors) report(msg string) {
	msg = redactOTLP(msg)
	key := digits.ReplaceAllString(msg, "#")
	h.mu.Lock()
	defer h.mu.Unlock()
	k := h.kinds[key]
	if k == nil {
		if len(h.kinds) >= otlpMaxKinds {
			key = "other"
			if k = h.kinds[key]; k != nil {
				k.untold++
				k.last = msg
				return
			}
		}
		k = &otlpKind{}
		h.kinds[key] = k
	} else if h.now().Sub(k.told) < h.interval {
		k.untold++
		k.last = msg
		return
	}
	h.tell(msg, k.untold)
	k.told, k.untold, k.last = h.now(), 0, msg
}

// flush tells how many errors were left untold; call it once the
// providers are shut down.
func (h *otlpErrors) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range h.kinds {
		if k.untold > 0 {
			h.tell(k.last, k.untold-1)
			k.untold = 0
		}
	}
}

// tell writes one line for msg; untold errors like it came before it since
// the last line. Called with h.mu held.
func (h *otlpErrors) tell(msg string, untold int) {
	if h.log != nil {
		// The SDK hands over only what it cannot remedy: an error.
		ev := h.log.Error().Str("component", "otlp")
		if untold > 0 {
			ev = ev.Int("suppressed", untold)
		}
		ev.Msg(msg)
		return
	}
	if untold > 0 {
		fmt.Fprintf(h.w, "courier fetch: --otlp: %s (%d more like it not shown)\n", msg, untold)
		return
	}
	fmt.Fprintf(h.w, "courier fetch: --otlp: %s\n", msg)
}

// install makes h the SDK's error handler and its logger's sink (errors
// only: its info and debug lines are dropped).
func (h *otlpErrors) install() {
	otel.SetErrorHandler(h)
	otel.SetLogger(logr.New(otlpSink{h}))
}

// otlpSink is a logr.LogSink that hands the SDK's error log lines to an
// otlpErrors and drops the others.
type otlpSink struct{ h *otlpErrors }

func (otlpSink) Init(logr.RuntimeInfo)    {}
func (otlpSink) Enabled(level int) bool   { return false } // info lines: none
func (otlpSink) Info(int, string, ...any) {}
func (s otlpSink) Error(err error, msg string, _ ...any) {
	switch {
	case err != nil && msg != "":
		s.h.report(msg + ": " + err.Error())
	case err != nil:
		s.h.report(err.Error())
	default:
		s.h.report(msg)
	}
}
func (s otlpSink) WithValues(...any) logr.LogSink { return s }
func (s otlpSink) WithName(string) logr.LogSink   { return s }
