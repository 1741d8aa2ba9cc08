package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/courier-go/courier/requests"
	"github.com/courier-go/courier/upload"
)

// inputLine is one request read from fetch's input, or the reason it could
// not be read.
type inputLine struct {
	n      int             // 1-based line number
	id     json.RawMessage // echoed from a JSON line; nil otherwise
	method string
	path   string
	req    *requests.Request
	err    error
}

// jsonLine is the JSON form of an input line.
type jsonLine struct {
	ID      json.RawMessage            `json:"id"`
	Method  string                     `json:"method"`
	Path    string                     `json:"path"`
	Query   map[string]json.RawMessage `json:"query"`
	Headers map[string]string          `json:"headers"`
	JSON    json.RawMessage            `json:"json"`
	Files   map[string]json.RawMessage `json:"files"`
	Fields  map[string]string          `json:"fields"`
}

// parse reads line n. skip is true for blank lines and # comments.
func (p *lineParser) parse(n int, text string) (in inputLine, skip bool) {
	in.n = n
	text = strings.TrimSpace(text)
	if text == "" || strings.HasPrefix(text, "#") {
		return in, true
	}
	if strings.HasPrefix(text, "{") {
		in.err = in.parseJSON(p, text)
	} else {
		in.err = in.parsePlain(p, text)
	}
	if in.err != nil {
		in.err = fmt.Errorf("line %d: %w", n, in.err)
		// The request still goes through the engine, which fails it with
		// this error, so the line gets its answer in order.
		in.req = requests.New(in.method, in.path)
		in.req.Fail(in.err)
	}
	return in, false
}

func (in *inputLine) parsePlain(p *lineParser, text string) error {
	fields := strings.Fields(text)
	switch len(fields) {
	case 1:
		in.method, in.path = http.MethodGet, fields[0]
	case 2:
		in.method, in.path = strings.ToUpper(fields[0]), fields[1]
	default:
		return fmt.Errorf("want /path, METHOD /path or a JSON object, got %d words", len(fields))
	}
	if err := checkPath(p, in.path); err != nil {
		return err
	}
	in.req = requests.New(in.method, in.path)
	return in.req.Err()
}

func checkPath(p *lineParser, path string) error {
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		return fmt.Errorf("path %q must start with / or be an http(s) URL", path)
	}
	return p.checkPath(path)
}

func (in *inputLine) parseJSON(p *lineParser, text string) error {
	if !utf8.ValidString(text) {
		// Its id would be echoed as is, making an output line that is not
		// JSON.
		return fmt.Errorf("invalid JSON: not valid UTF-8")
	}
	var j jsonLine
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("invalid JSON: more than one value on the line")
	}
	if len(j.ID) > 0 && !bytes.Equal(j.ID, []byte("null")) {
		in.id = j.ID
	}
	in.method, in.path = strings.ToUpper(j.Method), j.Path
	if in.method == "" {
		in.method = http.MethodGet
		if len(j.Files) > 0 || len(j.JSON) > 0 {
			in.method = http.MethodPost
		}
	}
	if in.path == "" {
		return fmt.Errorf(`"path" is missing`)
	}
	if err := checkPath(p, in.path); err != nil {
		return err
	}
	req := requests.New(in.method, in.path)
	keys := make([]string, 0, len(j.Query))
	for k := range j.Query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals, err := queryValues(j.Query[k])
		if err != nil {
			return fmt.Errorf("query %q: %w", k, err)
		}
		for _, v := range vals {
			req.Apply(requests.WithQuery(k, v))
		}
	}
	for k, v := range j.Headers {
		req.Apply(requests.WithHeader(k, v))
	}
	switch {
	case len(j.JSON) > 0 && (len(j.Files) > 0 || len(j.Fields) > 0):
		return fmt.Errorf(`"json" cannot go with "files" or "fields"`)
	case len(j.JSON) > 0:
		req.Body = requests.BytesBody(j.JSON, "application/json")
	case len(j.Files) > 0 || len(j.Fields) > 0:
		body, err := multipartBody(p.uploads, j.Files, j.Fields)
		if err != nil {
			return err
		}
		req.Body = body
	}
	in.req = req
	return req.Err()
}

// queryValues accepts a string, number, bool or an array of them.
func queryValues(raw json.RawMessage) ([]string, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		list = []json.RawMessage{raw}
	}
	out := make([]string, 0, len(list))
	for _, r := range list {
		var s string
		if err := json.Unmarshal(r, &s); err == nil {
			out = append(out, s)
			continue
		}
		var v any
		if err := json.Unmarshal(r, &v); err != nil {
			return nil, err
		}
		switch v.(type) {
		case float64, bool:
			out = append(out, string(r))
		default:
			return nil, fmt.Errorf("want a string, number, bool or a list of them, got %s", r)
		}
	}
	return out, nil
}

// multipartBody builds an upload from "files" ({"field": "a.png"} or
// {"field": ["a.png", "b.png"]}) and "fields".
// With a guard, every file must pass it; the parts name the files it
// resolved.
func multipartBody(g *uploadGuard, files map[string]json.RawMessage, fields map[string]string) (requests.Body, error) {
	var b upload.Builder
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		b.Field(k, fields[k])
	}
	names = names[:0]
	for k := range files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, field := range names {
		var paths []string
		if err := json.Unmarshal(files[field], &paths); err != nil {
			var one string
			if err := json.Unmarshal(files[field], &one); err != nil {
				return nil, fmt.Errorf("files %q: want a path or a list of paths", field)
			}
			paths = []string{one}
		}
		if g != nil {
			var refused []error
			for i, p := range paths {
				real, err := g.resolve(p)
				if err != nil {
					refused = append(refused, err)
				}
				paths[i] = real
			}
			if len(refused) > 0 {
				return nil, errors.Join(refused...)
			}
		}
		b.File(field, paths...)
	}
	return b.Build()
}
