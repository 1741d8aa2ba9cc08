package main

import (
	"strings"
	"testing"
)

// FuzzParseLine checks that no input line stops the batch: every line is
// skipped, or becomes a request, or an error that names its line.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"/items/1", "GET /x", "post /y", "# c", "", "   ", "{", `{"path":"/x"}`,
		`{"id":[1,2],"method":"PUT","path":"/x","query":{"a":[1,true,"s"]},"headers":{"K":"V"},"json":{"a":1}}`,
		`{"path":"/u","files":{"f":"nofile"}}`, `{"path":"x"}`, "GET /a b", "https://example.test/x", "\x00/x", `{"path":"/x"} {}`} {
		f.Add(s)
	}
	uploads, err := newUploadGuard(f.TempDir(), "")
	if err != nil {
		f.Fatal(err)
	}
	p, err := newLineParser("https://example.test/api/v1?k=v", uploads)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		in, skip := p.parse(7, text)
		if skip {
			if s := strings.TrimSpace(text); s != "" && !strings.HasPrefix(s, "#") {
				t.Fatalf("%q skipped", text)
			}
			return
		}
		if in.req == nil {
			t.Fatalf("%q: no request and no skip", text)
		}
		if in.err != nil && !strings.Contains(in.err.Error(), "line 7: ") {
			t.Fatalf("%q: error does not name the line: %v", text, in.err)
		}
		if in.err == nil && in.req.Err() != nil {
			t.Fatalf("%q: parsed, but the request is invalid: %v", text, in.req.Err())
		}
		if in.err != nil && in.req.Err() == nil {
			t.Fatalf("%q: the error would not reach the output", text)
		}
	})
}
