package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"

	"github.com/courier-go/courier/internal/demo"
)

// otlpReceiver is a local OTLP/HTTP collector: it accepts the protobuf
// POSTs of traces and metrics and keeps what it got.
type otlpReceiver struct {
	*httptest.Server
	mu      sync.Mutex
	spans   []string            // span names
	attrs   map[string][]string // attribute key -> values seen, on spans and events
	metrics map[string]bool     // metric names
	posts   int
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{attrs: map[string][]string{}, metrics: map[string]bool{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.posts++
		switch req.URL.Path {
		case "/v1/traces":
			var m tracepb.ExportTraceServiceRequest
			if proto.Unmarshal(body, &m) != nil {
				http.Error(w, "bad traces", http.StatusBadRequest)
				return
			}
			for _, rs := range m.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					for _, s := range ss.Spans {
						r.spans = append(r.spans, s.Name)
						r.keep(s.Attributes)
						for _, ev := range s.Events {
							r.keep(ev.Attributes)
						}
					}
				}
			}
			out, _ := proto.Marshal(&tracepb.ExportTraceServiceResponse{})
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.Write(out)
		case "/v1/metrics":
			var m metricspb.ExportMetricsServiceRequest
			if proto.Unmarshal(body, &m) != nil {
				http.Error(w, "bad metrics", http.StatusBadRequest)
				return
			}
			for _, rm := range m.ResourceMetrics {
				for _, sm := range rm.ScopeMetrics {
					for _, mt := range sm.Metrics {
						r.metrics[mt.Name] = true
					}
				}
			}
			out, _ := proto.Marshal(&metricspb.ExportMetricsServiceResponse{})
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.Write(out)
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *otlpReceiver) keep(kvs []*commonpb.KeyValue) {
	for _, kv := range kvs {
		r.attrs[kv.Key] = append(r.attrs[kv.Key], kv.Value.String())
	}
}

func TestFetchExportsTracesAndMetricsOverOTLP(t *testing.T) {
	api := demo.New(demo.Config{AccessUses: 5})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	tk := api.Login()
	rcv := newOTLPReceiver(t)

	var in strings.Builder
	for i := range 12 {
		in.WriteString("/items/" + strconv.Itoa(i) + "?api_key=query-secret\n")
	}
	env := []string{"COURIER_TOKEN=" + tk.AccessToken, "COURIER_REFRESH_TOKEN=" + tk.RefreshToken,
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL}
	run := courier(t, in.String(), env, "fetch", "--base-url", srv.URL, "--refresh-path", "/auth/refresh",
		"--otlp", "--summary=false", "--concurrency", "4")
	require.Equal(t, 0, run.code, run.stderr)
	assert.Len(t, parseOutput(t, run.stdout), 12)

	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	assert.Contains(t, rcv.spans, "GET", "request and attempt spans")
	assert.GreaterOrEqual(t, len(rcv.spans), 24, "a request span and an attempt span each, at least")
	for _, name := range []string{"http.client.request.duration", "courier.client.attempts", "courier.client.token.refreshes"} {
		assert.True(t, rcv.metrics[name], "metric %s exported", name)
	}
	for k, vs := range rcv.attrs {
		for _, v := range vs {
			for _, secret := range []string{tk.AccessToken, tk.RefreshToken, "query-secret"} {
				assert.NotContains(t, v, secret, "attribute %s", k)
			}
		}
	}
	assert.NotEmpty(t, rcv.attrs["url.full"])
	assert.Contains(t, rcv.attrs["url.full"][0], "?REDACTED")
}

func TestFetchExportsNothingUnlessAsked(t *testing.T) {
	rcv := newOTLPReceiver(t)
	api := httptest.NewServer(demo.New(demo.Config{}))
	t.Cleanup(api.Close)
	// The endpoint for one signal is not the general switch's: with
	// OTEL_SDK_DISABLED the SDK stays off even so.
	env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL, "OTEL_SDK_DISABLED=true"}
	run := courier(t, "/healthz\n", env, "fetch", "--base-url", api.URL, "--summary=false", "--otlp")
	require.Equal(t, 0, run.code, run.stderr)
	run = courier(t, "/healthz\n", nil, "fetch", "--base-url", api.URL, "--summary=false")
	require.Equal(t, 0, run.code, run.stderr)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	assert.Zero(t, rcv.posts)
}

// closedPort is a loopback address where nothing listens: a connection to
// it is refused.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestFetchReportsADeadOTLPEndpointThroughItsOwnLines pins what fetch says
// when the collector refuses connections: the SDK's errors come out as
// courier's own lines, a few at most however often the exports fail, and
// the batch's outcome does not change.
func TestFetchReportsADeadOTLPEndpointThroughItsOwnLines(t *testing.T) {
	srv := demo.New(demo.Config{})
	api := httptest.NewServer(srv)
	t.Cleanup(api.Close)
	env := append(tokenEnv(srv.Login()),
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+closedPort(t),
		// Export every 20ms, each attempt given up after 200ms, for a run
		// of about a second: dozens of failed exports.
		"OTEL_BSP_SCHEDULE_DELAY=20", "OTEL_METRIC_EXPORT_INTERVAL=20",
		"OTEL_EXPORTER_OTLP_TIMEOUT=200",
	)
	var in strings.Builder
	for i := range 20 {
		fmt.Fprintf(&in, "/slow/%d?ms=50\n", i)
	}
	rawLog := regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d `) // the standard log's prefix
	for _, tc := range []struct {
		name string
		args []string
		// own reports whether l is one of courier's lines for the SDK.
		own func(l string) bool
	}{
		{"through the logger", nil, func(l string) bool {
			var v struct{ Level, Component, Message string }
			return json.Unmarshal([]byte(l), &v) == nil && v.Level == "error" && v.Component == "otlp" && v.Message != ""
		}},
		{"with --log-level off", []string{"--log-level", "off"}, func(l string) bool {
			return strings.HasPrefix(l, "courier fetch: --otlp: ")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"fetch", "--base-url", api.URL, "--summary=false", "--concurrency", "1"}, tc.args...)
			run := courier(t, in.String(), env, args...)
			require.Equal(t, 0, run.code, "a dead collector changes nothing of the batch: %s", run.stderr)
			assert.Len(t, parseOutput(t, run.stdout), 20)

			lines := strings.Split(strings.TrimSpace(run.stderr), "\n")
			require.NotEmpty(t, lines[0], "the dead endpoint is reported")
			for _, l := range lines {
				assert.True(t, tc.own(l), "courier's own line: %q", l)
				assert.False(t, rawLog.MatchString(l), "no raw SDK log line: %q", l)
			}
			assert.Contains(t, run.stderr, "connection refused")
			assert.LessOrEqual(t, len(lines), 6, "one line per distinct error, not one per failed export:\n%s", run.stderr)
		})
	}
}
