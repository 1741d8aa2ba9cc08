package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFetchOutputIsValidJSONWhateverTheServerSends(t *testing.T) {
	bodies := map[string]string{
		"/binary":   "\xff\xfe\x00\x01PNG\x89",
		"/bad-json": `{"name":"caf` + "\xe9" + `"}`, // Latin-1, valid to json.Valid
		"/text":     "plain text",
		"/json":     `{"a":1}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(bodies[r.URL.Path]))
	}))
	defer srv.Close()
	input := "/binary\n/bad-json\n/text\n/json\n" + `{"id":"` + "\xff" + `","path":"/json"}` + "\n"
	r := courier(t, input, nil, "fetch", "--base-url", srv.URL)
	assert.Equal(t, 1, r.code, r.stderr)

	var lines []map[string]json.RawMessage
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		b := sc.Bytes()
		require.True(t, utf8.Valid(b) && json.Valid(b), "output line %q is not valid JSON", b)
		var l map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(b, &l))
		lines = append(lines, l)
	}
	require.Len(t, lines, 5)
	for i, path := range []string{"/binary", "/bad-json"} {
		var raw []byte
		require.NoError(t, json.Unmarshal(lines[i]["body_base64"], &raw), "line %d has body_base64", i+1)
		assert.Equal(t, bodies[path], string(raw), "the bytes survive")
		assert.Equal(t, "null", string(lines[i]["body"]))
	}
	assert.Equal(t, `"plain text"`, string(lines[2]["body"]))
	assert.Equal(t, `{"a":1}`, string(lines[3]["body"]))
	assert.NotContains(t, lines[2], "body_base64")
	assert.Contains(t, string(lines[4]["error"]), "line 5: invalid JSON: not valid UTF-8")
}
