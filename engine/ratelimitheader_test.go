package engine_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/courier-go/courier/engine"
)

func TestParseRateLimit(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	unix := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	none := engine.Quota{Remaining: -1, Limit: -1}
	for _, tc := range []struct {
		name string
		h    http.Header
		want engine.Quota
		ok   bool
	}{
		{"IETF with its policy",
			http.Header{"Ratelimit": {`"default";r=0;t=30`}, "Ratelimit-Policy": {`"default";q=100;w=60`}},
			engine.Quota{Remaining: 0, Reset: 30 * time.Second, HasReset: true, Limit: 100, Window: time.Minute}, true},
		{"IETF, the most restrictive of several policies",
			http.Header{"Ratelimit": {`"hour";r=90;t=3000, "minute";r=2;t=20`}, "Ratelimit-Policy": {`"hour";q=1000;w=3600, "minute";q=10;w=60`}},
			engine.Quota{Remaining: 2, Reset: 20 * time.Second, HasReset: true, Limit: 10, Window: time.Minute}, true},
		{"IETF, policies in two field lines",
			http.Header{"Ratelimit": {`"a";r=5;t=1`, `"b";r=0;t=9`}},
			engine.Quota{Remaining: 0, Reset: 9 * time.Second, HasReset: true, Limit: -1}, true},
		{"IETF, a quoted name with a comma and a semicolon",
			http.Header{"Ratelimit": {`"a,b;c";r=3;t=4`}, "Ratelimit-Policy": {`"a,b;c";q=7;w=8`}},
			engine.Quota{Remaining: 3, Reset: 4 * time.Second, HasReset: true, Limit: 7, Window: 8 * time.Second}, true},
		{"IETF dictionary of the earlier drafts",
			http.Header{"Ratelimit": {`limit=100, remaining=50, reset=5`}},
			engine.Quota{Remaining: 50, Reset: 5 * time.Second, HasReset: true, Limit: 100}, true},
		{"X-RateLimit with Unix seconds",
			http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {unix(42 * time.Second)}, "X-Ratelimit-Limit": {"5000"}},
			engine.Quota{Remaining: 0, Reset: 42 * time.Second, HasReset: true, Limit: 5000}, true},
		{"X-RateLimit with seconds from now",
			http.Header{"X-Ratelimit-Remaining": {"3"}, "X-Ratelimit-Reset": {"12"}},
			engine.Quota{Remaining: 3, Reset: 12 * time.Second, HasReset: true, Limit: -1}, true},
		{"X-RateLimit reset in the past",
			http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {unix(-time.Hour)}},
			engine.Quota{Remaining: 0, HasReset: true, Limit: -1}, true},
		{"RateLimit-* fields of the earlier drafts",
			http.Header{"Ratelimit-Remaining": {"1"}, "Ratelimit-Reset": {"2"}, "Ratelimit-Limit": {"3"}},
			engine.Quota{Remaining: 1, Reset: 2 * time.Second, HasReset: true, Limit: 3}, true},
		{"garbage is ignored",
			http.Header{"X-Ratelimit-Remaining": {"-1"}, "X-Ratelimit-Reset": {"soon"}, "X-Ratelimit-Limit": {"NaN"}},
			none, false},
		{"IETF garbage falls back to X-RateLimit",
			http.Header{"Ratelimit": {`"x";r=-1;t=oops`}, "X-Ratelimit-Remaining": {"4"}},
			engine.Quota{Remaining: 4, Limit: -1}, true},
		{"a huge reset is capped",
			http.Header{"Ratelimit": {`"d";r=0;t=99999999999999`}},
			engine.Quota{Remaining: 0, Reset: 365 * 24 * time.Hour, HasReset: true, Limit: -1}, true},
		{"nothing", http.Header{}, none, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := engine.ParseRateLimit(tc.h, now)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

func FuzzParseRateLimit(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, s := range [][3]string{
		{`"default";r=0;t=30`, `"default";q=100;w=60`, ""},
		{`"a";r=5;t=1, "b";r=0;t=9`, `"a";q=1;w=1, "b";q=2;w=2`, ""},
		{`limit=100, remaining=0, reset=5`, "", ""},
		{`"x\";y";r=1`, `"x\";y";q=3;w=0`, ""},
		{"", "", "1767323045"},
		{"", "", "30"},
		{`"`, `;;;==,,`, "1e400"},
		{`r=`, `"a";q=-1;w=99999999999999999999`, "-5"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, limit, policy, reset string) {
		h := http.Header{"Ratelimit": {limit}, "Ratelimit-Policy": {policy},
			"X-Ratelimit-Remaining": {reset}, "X-Ratelimit-Reset": {reset}}
		q, ok := engine.ParseRateLimit(h, now)
		if q.Reset < 0 || q.Reset > 365*24*time.Hour {
			t.Fatalf("%q %q %q: reset %s out of bounds", limit, policy, reset, q.Reset)
		}
		if q.Window < 0 || q.Window > 365*24*time.Hour {
			t.Fatalf("%q %q %q: window %s out of bounds", limit, policy, reset, q.Window)
		}
		if q.Remaining < -1 || q.Limit < -1 {
			t.Fatalf("%q %q %q: negative count %+v", limit, policy, reset, q)
		}
		if !ok && (q.Remaining != -1 || q.HasReset || q.Limit != -1) {
			t.Fatalf("%q %q %q: rejected but gave %+v", limit, policy, reset, q)
		}
		if !q.HasReset && q.Reset != 0 {
			t.Fatalf("%q %q %q: a reset without HasReset", limit, policy, reset)
		}
	})
}
