package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/courier-go/courier/errors"
)

// The engine writes its log lines with zerolog everywhere. When
// Config.Slog is set, the zerolog logger it writes to is one whose output
// is slogWriter: each event zerolog has finished (one JSON object, already
// redacted like every line the engine logs) is decoded and handed to the
// slog handler as one record, with the event's level, message and fields
// in their order. So the events, their levels and what is left out of
// them are the same for both loggers, and no other file knows which one
// the user chose.

// slogLogger returns a zerolog logger that forwards every event to l's
// handler. Its level is the lowest that the handler enables, so events
// the handler would drop are never built.
func slogLogger(l *slog.Logger) zerolog.Logger {
	h := l.Handler()
	level := zerolog.Disabled
	for _, m := range slogLevels {
		if h.Enabled(context.Background(), m.slog) {
			level = m.zerolog
			break
		}
	}
	return zerolog.New(slogWriter{h}).Level(level)
}

// slogLevels maps zerolog's levels to slog's, lowest first.
var slogLevels = []struct {
	zerolog zerolog.Level
	slog    slog.Level
}{
	{zerolog.TraceLevel, slog.LevelDebug - 4},
	{zerolog.DebugLevel, slog.LevelDebug},
	{zerolog.InfoLevel, slog.LevelInfo},
	{zerolog.WarnLevel, slog.LevelWarn},
	{zerolog.ErrorLevel, slog.LevelError},
	{zerolog.FatalLevel, slog.LevelError + 4},
	{zerolog.PanicLevel, slog.LevelError + 8},
}

func toSlogLevel(l zerolog.Level) slog.Level {
	for _, m := range slogLevels {
		if m.zerolog == l {
			return m.slog
		}
	}
	return slog.LevelInfo // zerolog.NoLevel: an event logged without one
}

// slogDurations names the fields the engine writes with zerolog's Dur (as
// a number of zerolog.DurationFieldUnit): they reach slog as time.Duration
// values.
var slogDurations = map[string]bool{"duration": true, "wait": true, "waited": true}

// slogWriter is a zerolog.LevelWriter that passes each event to a slog
// handler. It is safe for concurrent use if the handler is, as slog
// requires of every handler.
type slogWriter struct{ h slog.Handler }

func (w slogWriter) Write(p []byte) (int, error) { return w.WriteLevel(zerolog.NoLevel, p) }

// WriteLevel decodes one event and hands it to the handler. An event that
// does not decode (zerolog writes none such) reaches the handler as its
// raw text, never dropped.
func (w slogWriter) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	ctx := context.Background()
	sl := toSlogLevel(level)
	if !w.h.Enabled(ctx, sl) {
		return len(p), nil
	}
	msg, attrs, err := decodeEvent(p)
	if err != nil {
		msg, attrs = "unreadable log event", []slog.Attr{slog.String("event", string(bytes.TrimSpace(p)))}
	}
	r := slog.NewRecord(time.Now(), sl, msg, 0)
	r.AddAttrs(attrs...)
	return len(p), w.h.Handle(ctx, r)
}

// decodeEvent splits one zerolog event into its message and its other
// fields, in the order they were written, leaving out the level (the
// record has its own).
func decodeEvent(p []byte) (string, []slog.Attr, error) {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", nil, errNotAnEvent
	}
	var msg string
	var attrs []slog.Attr
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", nil, err
		}
		key, _ := t.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return "", nil, err
		}
		switch key {
		case zerolog.LevelFieldName:
		case zerolog.MessageFieldName:
			msg, _ = v.(string)
		default:
			attrs = append(attrs, slogAttr(key, v))
		}
	}
	return msg, attrs, nil
}

var errNotAnEvent = errors.New("not a JSON object")

// slogAttr turns one decoded field into an attribute of the closest kind:
// whole numbers become integers and the engine's durations durations.
func slogAttr(key string, v any) slog.Attr {
	n, ok := v.(json.Number)
	if !ok {
		return slog.Any(key, v)
	}
	if slogDurations[key] {
		if ms, err := n.Float64(); err == nil {
			return slog.Duration(key, time.Duration(ms*float64(zerolog.DurationFieldUnit)))
		}
	}
	if i, err := n.Int64(); err == nil {
		return slog.Int64(key, i)
	}
	if u, err := strconv.ParseUint(n.String(), 10, 64); err == nil {
		return slog.Uint64(key, u)
	}
	f, _ := n.Float64()
	return slog.Float64(key, f)
}
