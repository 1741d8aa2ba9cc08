package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
)

// resultEncoder writes result lines byte for byte as a json.Encoder with
// SetEscapeHTML(false) writes a result (or a checkpointLine), newline
// included, without its reflection: encoding a line this way costs a
// fraction of what the encoder costs, and fetch writes one per request.
// What it does not handle exactly (a string that needs escaping, a
// duration that is not a finite number, a body of another type) goes
// through json.Encoder, so the output never differs. The zero value is
// ready to use; it is not safe for concurrent use.
type resultEncoder struct {
	buf  bytes.Buffer  // the line being built; reused
	slow *json.Encoder // writes into slowBuf; made on first need
	// slowBuf holds what slow writes.
	slowBuf bytes.Buffer
}

// encode returns r's line; with hashed, as a checkpointLine with hash.
// The bytes are valid until the next call.
func (e *resultEncoder) encode(r *result, hashed bool, hash string) ([]byte, error) {
	e.buf.Reset()
	if e.appendResult(r, hashed, hash) {
		return e.buf.Bytes(), nil
	}
	if e.slow == nil {
		e.slow = json.NewEncoder(&e.slowBuf)
		e.slow.SetEscapeHTML(false)
	}
	e.slowBuf.Reset()
	var v any = r
	if hashed {
		v = checkpointLine{result: *r, Next: r.Next, Hash: hash}
	}
	if err := e.slow.Encode(v); err != nil {
		return nil, err
	}
	return e.slowBuf.Bytes(), nil
}

// appendResult writes r's line to e.buf; false when it cannot say exactly
// what json.Encoder would.
func (e *resultEncoder) appendResult(r *result, hashed bool, hash string) bool {
	b := &e.buf
	b.WriteString(`{"line":`)
	b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(r.Line), 10))
	b.WriteString(`,"id":`)
	if !appendRaw(b, r.ID) {
		return false
	}
	if r.Page != 0 {
		b.WriteString(`,"page":`)
		b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(r.Page), 10))
	}
	b.WriteString(`,"method":`)
	if !appendString(b, r.Method) {
		return false
	}
	b.WriteString(`,"path":`)
	if !appendString(b, r.Path) {
		return false
	}
	b.WriteString(`,"status":`)
	b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(r.Status), 10))
	b.WriteString(`,"attempts":`)
	b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(r.Attempts), 10))
	b.WriteString(`,"duration_ms":`)
	if !appendFloat(b, r.DurationMS) {
		return false
	}
	if r.Cache != "" {
		b.WriteString(`,"cache":`)
		if !appendString(b, r.Cache) {
			return false
		}
	}
	b.WriteString(`,"body":`)
	switch body := r.Body.(type) {
	case nil:
		b.WriteString("null")
	case json.RawMessage:
		if !appendRaw(b, body) {
			return false
		}
	case string:
		if !appendString(b, body) {
			return false
		}
	default:
		return false
	}
	if len(r.BodyBase64) > 0 {
		b.WriteString(`,"body_base64":"`)
		n := base64.StdEncoding.EncodedLen(len(r.BodyBase64))
		b.Grow(n)
		enc := b.AvailableBuffer()[:n]
		base64.StdEncoding.Encode(enc, r.BodyBase64)
		b.Write(enc)
		b.WriteByte('"')
	}
	if r.Error != "" {
		b.WriteString(`,"error":`)
		if !appendString(b, r.Error) {
			return false
		}
	}
	if hashed && r.Next != "" {
		b.WriteString(`,"next":`)
		if !appendString(b, r.Next) {
			return false
		}
	}
	if hashed {
		b.WriteString(`,"hash":`)
		if !appendString(b, hash) {
			return false
		}
	}
	b.WriteString("}\n")
	return true
}

// appendString writes s quoted when no byte of it needs escaping
// (printable ASCII other than " and \); false otherwise.
func appendString(b *bytes.Buffer, s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
	return true
}

// appendRaw writes a json.RawMessage as json.Encoder does: null when nil,
// else compacted (json.Compact is the encoder's own compaction with HTML
// left unescaped); false when it is not valid JSON.
func appendRaw(b *bytes.Buffer, raw json.RawMessage) bool {
	if raw == nil {
		b.WriteString("null")
		return true
	}
	return json.Compact(b, raw) == nil
}

// appendFloat writes f as json.Encoder writes a float64; false for NaN
// and the infinities, which it refuses.
func appendFloat(b *bytes.Buffer, f float64) bool {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	out := strconv.AppendFloat(b.AvailableBuffer(), f, format, -1, 64)
	if format == 'e' {
		// e-09 becomes e-9, as the encoder writes it.
		if n := len(out); n >= 4 && out[n-4] == 'e' && out[n-3] == '-' && out[n-2] == '0' {
			out[n-2] = out[n-1]
			out = out[:n-1]
		}
	}
	b.Write(out)
	return true
}
