package main

import (
	"io"
	"net/http"
	"net/http/httptest"
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
