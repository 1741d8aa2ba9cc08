package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/engine"
)

func TestRateFlagsSetPerHostLimits(t *testing.T) {
	o := rateOptions{
		hosts:   []string{"api.example.com=10", "127.0.0.1:8080=5:20", "API.example.com/search=0.5:1"},
		perHost: "2:4",
	}
	var cfg engine.Config
	require.NoError(t, o.apply(&cfg))
	assert.Equal(t, engine.Rate{PerSecond: 2, Burst: 4}, cfg.RateLimit.PerHost)
	assert.Equal(t, map[string]engine.Rate{
		"api.example.com": {PerSecond: 10},
		"127.0.0.1:8080":  {PerSecond: 5, Burst: 20},
	}, cfg.RateLimit.Hosts)
	assert.Equal(t, []engine.Route{{Host: "API.example.com", Prefix: "/search", Rate: engine.Rate{PerSecond: 0.5, Burst: 1}}}, cfg.RateLimit.Routes)
}

func TestRateFlagsUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rate-host", "api.example.com"}, `--rate-host "api.example.com": want HOST=RATE[:BURST]`},
		{[]string{"--rate-host", "api.example.com=fast"}, `--rate-host "api.example.com=fast": rate "fast"`},
		{[]string{"--rate-host", "api.example.com=0"}, `--rate-host "api.example.com=0": rate "0": want requests per second`},
		{[]string{"--rate-host", "api.example.com=5:0"}, `--rate-host "api.example.com=5:0": burst "0"`},
		{[]string{"--rate-host", "https://api.example.com=5"}, `"https://api.example.com" is not a host`},
		{[]string{"--rate-host", "=5"}, `"" is not a host`},
		{[]string{"--rate-host", "a.test=1", "--rate-host", "A.test=2"}, `--rate-host "A.test=2": A.test is limited twice`},
		{[]string{"--rate-per-host", "-3"}, `--rate-per-host "-3": rate "-3"`},
		{[]string{"--rate-per-host", "3:x"}, `--rate-per-host "3:x": burst "x"`},
	} {
		args := append([]string{"fetch", "--base-url", "http://x"}, tc.args...)
		r := courier(t, "", nil, args...)
		assert.Equal(t, 2, r.code, "%v", tc.args)
		assert.Contains(t, r.stderr, tc.want, "%v", tc.args)
	}
}

func TestFetchSummaryCountsHoldsAnd429s(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			// The quota is spent for 50 ms: a hold, and a 429.
			w.Header().Set("X-Ratelimit-Remaining", "0")
			w.Header().Set("X-Ratelimit-Reset", "0.05")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	r := courier(t, "/a\n/b\n", nil, "fetch", "--base-url", srv.URL, "--concurrency", "1",
		"--rate-host", u.Host+"=1000:10", "--rate-per-host", "500")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, 2, strings.Count(r.stdout, `"status":200`))
	assert.Contains(t, r.stderr, "429s        1\nholds       1\n")
}

func TestHoldScopeFlag(t *testing.T) {
	for _, tc := range []struct {
		flag string
		want engine.HoldScope
	}{
		{"auto", engine.HoldAuto},
		{"host", engine.HoldHost},
		{"route", engine.HoldRoute},
	} {
		o := rateOptions{holdScope: tc.flag}
		var cfg engine.Config
		require.NoError(t, o.apply(&cfg), tc.flag)
		assert.Equal(t, tc.want, cfg.RateLimit.Adaptive.HoldScope, tc.flag)
	}
	o := rateOptions{holdScope: "path"}
	err := o.apply(&engine.Config{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--hold-scope "path"`)
	assert.Contains(t, err.Error(), "auto, host or route")
}
