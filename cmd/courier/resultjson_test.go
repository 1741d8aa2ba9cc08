package main

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// encodeWithEncodingJSON is how result lines were written before
// resultEncoder: the reference it must match byte for byte.
func encodeWithEncodingJSON(r result, hashed bool, hash string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	var v any = r
	if hashed {
		v = checkpointLine{result: r, Hash: hash}
	}
	err := enc.Encode(v)
	return buf.Bytes(), err
}

func TestResultEncoderWritesWhatEncodingJSONWrites(t *testing.T) {
	cases := map[string]result{
		"success":           {Line: 1, ID: json.RawMessage("null"), Method: "GET", Path: "/item?i=1", Status: 200, Attempts: 1, DurationMS: 1.25, Body: json.RawMessage(`{"id":42,"tags":["a","b"]}`)},
		"body spaced":       {Line: 2, ID: json.RawMessage(` { "k" : [1, 2] } `), Method: "POST", Path: "/x", Status: 201, Attempts: 2, DurationMS: 0, Body: json.RawMessage("{\n  \"a\": \"<b>&\" \t}")},
		"text body":         {Line: 3, ID: json.RawMessage(`"abc"`), Method: "GET", Path: "/t", Status: 200, DurationMS: 12, Body: "plain <text> & \"quotes\"\n\u2028 é"},
		"binary body":       {Line: 4, ID: json.RawMessage("7"), Method: "GET", Path: "/b", Status: 200, DurationMS: 3.5, BodyBase64: []byte{0xff, 0xfe, 0, 1, 2}},
		"failure":           {Line: 5, ID: json.RawMessage("null"), Method: "GET", Path: "/f", Status: 503, Attempts: 3, DurationMS: 1e-7, Error: `GET /f: status 503 "unavailable"`},
		"no answer":         {Line: 6, ID: json.RawMessage("null"), Method: "DELETE", Path: "/p\\q", DurationMS: 2e21, Error: "line 6: interrupted (stopped by SIGINT) before an answer came"},
		"nil id":            {Line: 7, Method: "GET", Path: "/n", DurationMS: 0.001},
		"control chars":     {Line: 8, ID: json.RawMessage("null"), Method: "GET", Path: "/\x01\x7f", Error: "bad\tline"},
		"invalid UTF-8":     {Line: 9, ID: json.RawMessage("null"), Method: "GET", Path: "/\xff", Body: "\xc3\x28"},
		"large line number": {Line: math.MaxInt32, ID: json.RawMessage("-1.5e3"), Method: "HEAD", Path: "https://example.com/a", Status: 204, Attempts: 1, DurationMS: 123456.789},
	}
	var enc resultEncoder
	for name, r := range cases {
		for _, hashed := range []bool{false, true} {
			want, wantErr := encodeWithEncodingJSON(r, hashed, "0123456789abcdef0123456789abcdef")
			require.NoError(t, wantErr, name)
			got, err := enc.encode(&r, hashed, "0123456789abcdef0123456789abcdef")
			require.NoError(t, err, name)
			assert.Equal(t, string(want), string(got), "%s (hashed %v)", name, hashed)
		}
	}
}

func TestResultEncoderFailsWhereEncodingJSONFails(t *testing.T) {
	var enc resultEncoder
	for name, r := range map[string]result{
		"NaN duration": {Line: 1, DurationMS: math.NaN()},
		"invalid id":   {Line: 1, ID: json.RawMessage("{")},
		"empty body":   {Line: 1, Body: json.RawMessage{}},
	} {
		_, wantErr := encodeWithEncodingJSON(r, false, "")
		require.Error(t, wantErr, name)
		_, err := enc.encode(&r, false, "")
		assert.Error(t, err, name)
	}
}

func FuzzResultEncoder(f *testing.F) {
	f.Add(1, []byte("null"), "GET", "/item", 200, 1, 1.5, uint8(0), []byte(`{"a":1}`), "", "")
	f.Add(2, []byte(`"x"`), "POST", "/a b", 0, 3, 1e-9, uint8(1), []byte("text\n"), "line 2: \"bad\"", "abc")
	f.Add(3, []byte(nil), "get", "/\u2028", 500, 0, 3e21, uint8(2), []byte{0xff}, "é", "")
	f.Fuzz(func(t *testing.T, line int, id []byte, method, path string, status, attempts int, dur float64, kind uint8, body []byte, errText, hash string) {
		r := result{Line: line, ID: id, Method: method, Path: path, Status: status, Attempts: attempts, DurationMS: dur, Error: errText}
		switch kind % 4 {
		case 1:
			r.Body = json.RawMessage(body)
		case 2:
			r.Body = string(body)
		case 3:
			r.BodyBase64 = body
		}
		hashed := hash != ""
		want, wantErr := encodeWithEncodingJSON(r, hashed, hash)
		var enc resultEncoder
		got, err := enc.encode(&r, hashed, hash)
		if wantErr != nil {
			if err == nil {
				t.Fatalf("encoding/json fails (%v), resultEncoder wrote %q", wantErr, got)
			}
			return
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("resultEncoder wrote %q (%v), encoding/json %q", got, err, want)
		}
	})
}
