package oteltest

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/embedded"
	"go.opentelemetry.io/otel/metric/noop"
)

// Kind is the kind of instrument a [Metric] came from.
type Kind int

// The instrument kinds the recorder keeps. Instruments of other kinds are
// accepted and their measurements dropped.
const (
	Counter   Kind = iota + 1 // Int64Counter, Int64UpDownCounter, Int64ObservableCounter
	Histogram                 // Float64Histogram
	Gauge                     // Int64Gauge, Int64ObservableGauge
)

// Point is one attribute set's value: Value for counters and gauges; Count,
// Sum and Bounds for histograms.
type Point struct {
	Attributes attribute.Set
	Value      int64
	Count      uint64
	Sum        float64
	Bounds     []float64
}

// Metric is an instrument's points at a collection.
type Metric struct {
	Name   string
	Kind   Kind
	Points []Point
}

// MeterProvider records what its meters' instruments measure. Its zero
// value is not usable: call [NewMeterProvider]. It is safe for concurrent
// use.
type MeterProvider struct {
	embedded.MeterProvider

	mu        sync.Mutex // protects the fields below
	metrics   map[string]*instrument
	callbacks map[*registration]metric.Callback
}

// NewMeterProvider returns an empty recorder.
func NewMeterProvider() *MeterProvider {
	return &MeterProvider{metrics: map[string]*instrument{}, callbacks: map[*registration]metric.Callback{}}
}

// Meter returns a meter whose instruments p records.
func (p *MeterProvider) Meter(string, ...metric.MeterOption) metric.Meter { return meter{p: p} }

// Collect runs the registered callbacks and returns every instrument's
// points by name, as a manual reader's collection would.
func (p *MeterProvider) Collect() map[string]Metric {
	p.mu.Lock()
	cbs := make([]metric.Callback, 0, len(p.callbacks))
	for _, cb := range p.callbacks {
		cbs = append(cbs, cb)
	}
	p.mu.Unlock()
	for _, cb := range cbs {
		_ = cb(context.Background(), observer{p: p})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Metric, len(p.metrics))
	for name, in := range p.metrics {
		m := Metric{Name: name, Kind: in.kind}
		for _, pt := range in.points {
			pt.Bounds = append([]float64(nil), in.bounds...)
			m.Points = append(m.Points, *pt)
		}
		out[name] = m
	}
	return out
}

// instrument is one named instrument's state, owned by its provider's mu.
type instrument struct {
	kind   Kind
	bounds []float64
	points map[attribute.Distinct]*Point
}

func (p *MeterProvider) instrument(name string, kind Kind, bounds []float64) *instrument {
	p.mu.Lock()
	defer p.mu.Unlock()
	in, ok := p.metrics[name]
	if !ok {
		in = &instrument{kind: kind, bounds: bounds, points: map[attribute.Distinct]*Point{}}
		p.metrics[name] = in
	}
	return in
}

// record applies one measurement under the provider's lock.
func (p *MeterProvider) record(in *instrument, set attribute.Set, f func(*Point)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pt, ok := in.points[set.Equivalent()]
	if !ok {
		pt = &Point{Attributes: set}
		in.points[set.Equivalent()] = pt
	}
	f(pt)
}

type meter struct {
	noop.Meter
	p *MeterProvider
}

func (m meter) Int64Counter(name string, _ ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return int64Adder{p: m.p, in: m.p.instrument(name, Counter, nil)}, nil
}

func (m meter) Int64UpDownCounter(name string, _ ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	return int64Adder{p: m.p, in: m.p.instrument(name, Counter, nil)}, nil
}

func (m meter) Int64Gauge(name string, _ ...metric.Int64GaugeOption) (metric.Int64Gauge, error) {
	return int64Gauge{p: m.p, in: m.p.instrument(name, Gauge, nil)}, nil
}

func (m meter) Float64Histogram(name string, opts ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	cfg := metric.NewFloat64HistogramConfig(opts...)
	return float64Histogram{p: m.p, in: m.p.instrument(name, Histogram, cfg.ExplicitBucketBoundaries())}, nil
}

func (m meter) Int64ObservableCounter(name string, opts ...metric.Int64ObservableCounterOption) (metric.Int64ObservableCounter, error) {
	o := &int64Observable{in: m.p.instrument(name, Counter, nil)}
	m.register(metric.NewInt64ObservableCounterConfig(opts...).Callbacks(), o)
	return o, nil
}

func (m meter) Int64ObservableGauge(name string, opts ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	o := &int64Observable{in: m.p.instrument(name, Gauge, nil)}
	m.register(metric.NewInt64ObservableGaugeConfig(opts...).Callbacks(), o)
	return o, nil
}

// register keeps an instrument's own callbacks.
func (m meter) register(cbs []metric.Int64Callback, o *int64Observable) {
	for _, cb := range cbs {
		_, _ = m.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
			return cb(ctx, int64Observer{obs: obs, o: o})
		}, o)
	}
}

func (m meter) RegisterCallback(f metric.Callback, _ ...metric.Observable) (metric.Registration, error) {
	r := &registration{p: m.p}
	m.p.mu.Lock()
	m.p.callbacks[r] = f
	m.p.mu.Unlock()
	return r, nil
}

type registration struct {
	embedded.Registration
	p *MeterProvider
}

func (r *registration) Unregister() error {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	delete(r.p.callbacks, r)
	return nil
}

type int64Adder struct {
	embedded.Int64Counter
	embedded.Int64UpDownCounter
	p  *MeterProvider
	in *instrument
}

func (c int64Adder) Add(_ context.Context, v int64, opts ...metric.AddOption) {
	c.p.record(c.in, metric.NewAddConfig(opts).Attributes(), func(pt *Point) { pt.Value += v })
}

func (c int64Adder) Enabled(context.Context) bool { return true }

type int64Gauge struct {
	embedded.Int64Gauge
	p  *MeterProvider
	in *instrument
}

func (g int64Gauge) Record(_ context.Context, v int64, opts ...metric.RecordOption) {
	g.p.record(g.in, metric.NewRecordConfig(opts).Attributes(), func(pt *Point) { pt.Value = v })
}

func (g int64Gauge) Enabled(context.Context) bool { return true }

type float64Histogram struct {
	embedded.Float64Histogram
	p  *MeterProvider
	in *instrument
}

func (h float64Histogram) Record(_ context.Context, v float64, opts ...metric.RecordOption) {
	h.p.record(h.in, metric.NewRecordConfig(opts).Attributes(), func(pt *Point) { pt.Count++; pt.Sum += v })
}

func (h float64Histogram) Enabled(context.Context) bool { return true }

// int64Observable is an observable counter or gauge: what a collection's
// callbacks observe replaces its points.
type int64Observable struct {
	metric.Int64Observable
	embedded.Int64ObservableCounter
	embedded.Int64ObservableGauge
	in *instrument
}

type observer struct {
	embedded.Observer
	p *MeterProvider
}

func (o observer) ObserveFloat64(metric.Float64Observable, float64, ...metric.ObserveOption) {}

func (o observer) ObserveInt64(obs metric.Int64Observable, v int64, opts ...metric.ObserveOption) {
	if io, ok := obs.(*int64Observable); ok {
		o.p.record(io.in, metric.NewObserveConfig(opts).Attributes(), func(pt *Point) { pt.Value = v })
	}
}

type int64Observer struct {
	embedded.Int64Observer
	obs metric.Observer
	o   *int64Observable
}

func (o int64Observer) Observe(v int64, opts ...metric.ObserveOption) {
	o.obs.ObserveInt64(o.o, v, opts...)
}
