package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/courier-go/courier/engine"
)

// OpenTelemetry export for fetch: traces and metrics over OTLP/HTTP, only
// when asked, with --otlp or the standard OTEL_EXPORTER_OTLP_*ENDPOINT
// variables. The exporters read the rest of their settings (headers,
// timeout, compression, certificates) from the standard variables too, so
// a collector's credentials never go through argv.

// otlpFlushTimeout bounds the final export when fetch ends.
const otlpFlushTimeout = 5 * time.Second

func otlpFlag(fs *pflag.FlagSet, on *bool) {
	fs.BoolVar(on, "otlp", false, "export traces and metrics over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318); also on when that variable is set")
}

// otlpWanted reports whether export was asked for.
func otlpWanted(flag bool) bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	return flag || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""
}

// setupOTLP gives cfg a tracer and a meter provider that export over
// OTLP/HTTP when export was asked for. The returned function flushes and
// stops them; call it once the engine is closed. It reports the SDK's
// errors and a failed flush on stderr (see otlpErrors): export is best
// effort and never changes fetch's outcome.
func setupOTLP(ctx context.Context, flag bool, cfg *engine.Config, stderr io.Writer) (shutdown func(), err error) {
	if !otlpWanted(flag) {
		return func() {}, nil
	}
	// The SDK's own errors (a collector that is down fails every export)
	// come out as fetch's lines, a few at most, never as raw log lines.
	sdkErrors := newOTLPErrors(stderr, cfg.Logger)
	sdkErrors.install()
	te, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("--otlp: traces: %w", err)
	}
	me, err := otlpmetrichttp.New(ctx)
	if err != nil {
		_ = te.Shutdown(ctx)
		return nil, fmt.Errorf("--otlp: metrics: %w", err)
	}
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the name.
	res, err := resource.Merge(resource.NewSchemaless(semconv.ServiceName("courier")), resource.Environment())
	if err != nil {
		_ = te.Shutdown(ctx)
		_ = me.Shutdown(ctx)
		return nil, fmt.Errorf("--otlp: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(te), sdktrace.WithResource(res))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me)), sdkmetric.WithResource(res))
	cfg.TracerProvider, cfg.MeterProvider = tp, mp
	cfg.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	return func() {
		// The run's context may have ended (a signal): the flush gets its
		// own time.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), otlpFlushTimeout)
		defer cancel()
		// A failed last export is one more error like those before it.
		sdkErrors.Handle(tp.Shutdown(ctx))
		sdkErrors.Handle(mp.Shutdown(ctx))
		sdkErrors.flush()
	}, nil
}
