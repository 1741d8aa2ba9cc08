// Package oteltest records what the engine hands the OpenTelemetry API:
// spans, with their attributes, events, links and status, and metric
// points. It implements the API's TracerProvider and MeterProvider with
// nothing but the API module, so the library's tests need no SDK and the
// library's go.mod requires none.
package oteltest

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// TracerProvider records every span its tracers start. Its zero value is
// not usable: call [NewTracerProvider]. It is safe for concurrent use.
type TracerProvider struct {
	embedded.TracerProvider

	ids   atomic.Uint64 // the last trace or span ID handed out
	mu    sync.Mutex    // protects ended
	ended []*Span
}

// NewTracerProvider returns an empty recorder.
func NewTracerProvider() *TracerProvider { return &TracerProvider{} }

// Tracer returns a tracer whose spans p records.
func (p *TracerProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return tracer{p: p} }

// Ended returns the spans ended so far, in the order they ended.
func (p *TracerProvider) Ended() []*Span {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Span(nil), p.ended...)
}

func (p *TracerProvider) nextID() uint64 { return p.ids.Add(1) }

type tracer struct {
	embedded.Tracer
	p *TracerProvider
}

func (t tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	parent := trace.SpanContextFromContext(ctx)
	if cfg.NewRoot() {
		parent = trace.SpanContext{}
	}
	var tid trace.TraceID
	if parent.IsValid() {
		tid = parent.TraceID()
	} else {
		binary.BigEndian.PutUint64(tid[8:], t.p.nextID())
	}
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], t.p.nextID())
	s := &Span{
		p:      t.p,
		name:   name,
		kind:   cfg.SpanKind(),
		parent: parent,
		sc: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled,
		}),
		attrs: append([]attribute.KeyValue(nil), cfg.Attributes()...),
		links: append([]trace.Link(nil), cfg.Links()...),
	}
	return trace.ContextWithSpan(ctx, s), s
}

// Status is a span's status.
type Status struct {
	Code        codes.Code
	Description string
}

// Event is an event added to a span.
type Event struct {
	Name       string
	Attributes []attribute.KeyValue
}

// Span is a recorded span. Its readers (Name, Attributes, …) are safe to
// call while the span is still being written.
type Span struct {
	embedded.Span
	p      *TracerProvider
	sc     trace.SpanContext // immutable
	parent trace.SpanContext // immutable
	kind   trace.SpanKind    // immutable

	mu     sync.Mutex // protects the fields below
	name   string
	attrs  []attribute.KeyValue
	events []Event
	links  []trace.Link
	status Status
	ended  bool
}

// Name returns the span's name.
func (s *Span) Name() string { s.mu.Lock(); defer s.mu.Unlock(); return s.name }

// SpanKind returns the kind the span was started with.
func (s *Span) SpanKind() trace.SpanKind { return s.kind }

// Parent returns the span context of the span's parent, invalid for a root.
func (s *Span) Parent() trace.SpanContext { return s.parent }

// Status returns the span's status.
func (s *Span) Status() Status { s.mu.Lock(); defer s.mu.Unlock(); return s.status }

// Attributes returns the span's attributes, in the order they were set.
func (s *Span) Attributes() []attribute.KeyValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]attribute.KeyValue(nil), s.attrs...)
}

// Events returns the span's events, in the order they were added.
func (s *Span) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// Links returns the span's links.
func (s *Span) Links() []trace.Link {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]trace.Link(nil), s.links...)
}

// End ends the span; the first call records it with its provider.
func (s *Span) End(...trace.SpanEndOption) {
	s.mu.Lock()
	first := !s.ended
	s.ended = true
	s.mu.Unlock()
	if first {
		s.p.mu.Lock()
		s.p.ended = append(s.p.ended, s)
		s.p.mu.Unlock()
	}
}

// AddEvent records an event.
func (s *Span) AddEvent(name string, opts ...trace.EventOption) {
	cfg := trace.NewEventConfig(opts...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, Event{Name: name, Attributes: append([]attribute.KeyValue(nil), cfg.Attributes()...)})
}

// AddLink records a link.
func (s *Span) AddLink(l trace.Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.links = append(s.links, l)
}

// IsRecording reports whether the span has not ended yet.
func (s *Span) IsRecording() bool { s.mu.Lock(); defer s.mu.Unlock(); return !s.ended }

// RecordError records err as an "exception" event, as the SDK does.
func (s *Span) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	opts = append(opts, trace.WithAttributes(attribute.String("exception.message", err.Error())))
	s.AddEvent("exception", opts...)
}

// SpanContext returns the span's own context.
func (s *Span) SpanContext() trace.SpanContext { return s.sc }

// SetStatus sets the status as the SDK does: Unset is ignored, Ok is final,
// and a description is kept only with Error.
func (s *Span) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code == codes.Unset || s.status.Code == codes.Ok {
		return
	}
	if code != codes.Error {
		description = ""
	}
	s.status = Status{Code: code, Description: description}
}

// SetName renames the span.
func (s *Span) SetName(name string) { s.mu.Lock(); defer s.mu.Unlock(); s.name = name }

// SetAttributes sets attributes; a key set again keeps its latest value.
func (s *Span) SetAttributes(kv ...attribute.KeyValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
next:
	for _, a := range kv {
		for i := range s.attrs {
			if s.attrs[i].Key == a.Key {
				s.attrs[i] = a
				continue next
			}
		}
		s.attrs = append(s.attrs, a)
	}
}

// TracerProvider returns the provider that records the span.
func (s *Span) TracerProvider() trace.TracerProvider { return s.p }
