package engine

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/courier-go/courier/requests"
)

// FuzzDedupKey checks that building a dedup key never fails, that the
// order of query parameters does not matter, that a credential the caller
// set keeps its request apart (and enters the key only as a digest), that a
// POST gets none, and that another URL gets another key.
// It found that "//host/x" paths were silently resolved to the base URL.
func FuzzDedupKey(f *testing.F) {
	for _, s := range [][3]string{{"/items", "a", "b"}, {"/x/y", "k", "v w"}, {"/%2F", "", "&"}, {"/a?b=c", "=", "?"}, {"//x", "a", "a"}} {
		f.Add(s[0], s[1], s[2])
	}
	e := &Engine{s: &settings{Config: Config{BaseURL: "https://api.test/v1"}, authHeader: "Authorization"}}
	e.s.base, _ = url.Parse(e.s.BaseURL)
	e.s.sensitive = e.s.sensitiveHeaders()
	const credential = "c9f1e0d7-caller-credential"
	f.Fuzz(func(t *testing.T, path, k, v string) {
		key := func(r *requests.Request) string {
			u, err := e.resolve(r)
			if err != nil {
				return "invalid"
			}
			return e.dedupKey(r, &u)
		}
		plain := requests.New("GET", "/"+path)
		if u, err := e.resolve(plain); err == nil && !strings.Contains(u.RawQuery, "&") {
			// The common key is built without u.String(), to the same text.
			if got, want := key(plain), "GET\x00"+u.String(); got != want {
				t.Fatalf("key %q, want %q", got, want)
			}
		}
		a := requests.New("GET", "/"+path, requests.WithQuery(k, v), requests.WithQuery(k+"2", v+"2"))
		b := requests.New("GET", "/"+path, requests.WithQuery(k+"2", v+"2"), requests.WithQuery(k, v))
		if key(a) != key(b) {
			t.Fatalf("query order changed the key: %q vs %q", key(a), key(b))
		}
		withToken := requests.New("GET", "/"+path, requests.WithQuery(k, v), requests.WithQuery(k+"2", v+"2"),
			requests.WithHeader("Authorization", "Bearer "+credential))
		if ka := key(withToken); ka != "invalid" && (ka == key(a) || strings.Contains(ka, credential) && !strings.Contains(path+k+v, credential)) {
			t.Fatalf("a caller's own Authorization must keep its request apart, as a digest: %q", ka)
		}
		if key(a) != "invalid" {
			post := requests.New(http.MethodPost, "/"+path)
			if key(post) != "" && key(post) != "invalid" {
				t.Fatalf("a POST without a dedup key got one: %q", key(post))
			}
			other := requests.New("GET", "/"+path+"/other", requests.WithQuery(k, v), requests.WithQuery(k+"2", v+"2"))
			ua, _ := e.resolve(a)
			uo, err := e.resolve(other)
			// Requests for different URLs never share a key (a fragment,
			// never sent, does not make a URL different).
			if err == nil && ua.String() != uo.String() && key(other) == key(a) {
				t.Fatalf("%s and %s share a key", &ua, &uo)
			}
		}
	})
}
