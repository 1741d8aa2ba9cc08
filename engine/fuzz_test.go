package engine_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/courier-go/courier/engine"
)

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, s := range []string{"0", "120", "-1", "", "  7 ", "1.5", "soon", "99999999999999999999",
		now.Add(time.Minute).Format(http.TimeFormat), now.Add(-time.Hour).Format(http.TimeFormat),
		"Mon, 02 Jan 2006 15:04:05 GMT", "Monday, 02-Jan-06 15:04:05 GMT", "Mon Jan  2 15:04:05 2006"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := engine.ParseRetryAfter(v, now)
		if !ok && d != 0 {
			t.Fatalf("%q: rejected but gave %s", v, d)
		}
		if d < 0 {
			t.Fatalf("%q: negative wait %s", v, d)
		}
	})
}

func FuzzTokenParser(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"a","refresh_token":"r","expires_in":3600}`,
		`{"access_token":"a","expires_in":"3600"}`,
		`{"access_token":"a","expires_in":-5}`,
		`{"access_token":"a","expires_in":1e300}`,
		`{"access_token":""}`, `{"access_token":5}`, `{"refresh_token":"r"}`, `[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tk, err := engine.DefaultTokenParser(body)
		if err != nil {
			return
		}
		if tk.AccessToken == "" {
			t.Fatalf("%q: parsed without an access token", body)
		}
		if tk.ExpiresIn < 0 || tk.ExpiresIn > 366*24*time.Hour {
			t.Fatalf("%q: insane lifetime %s accepted", body, tk.ExpiresIn)
		}
	})
}
