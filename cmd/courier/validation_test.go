package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestEveryValidationErrorNamesItsFlag runs each command with one bad
// value at a time: the command refuses it as a usage error (exit 2), before
// anything is sent, and the message names the flag (or argument) at fault.
func TestEveryValidationErrorNamesItsFlag(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-dir", "file")
	const base = "http://127.0.0.1:1" // a closed port: nothing may be sent anyway
	fetch := func(args ...string) []string {
		return append([]string{"fetch", "--base-url", base}, args...)
	}
	redis := "redis://127.0.0.1:1"
	for _, tc := range []struct {
		args []string
		flag string // what the message must name
	}{
		{[]string{"fetch"}, "--base-url"},
		{[]string{"fetch", "--base-url", "ftp://127.0.0.1/x"}, "--base-url"},
		{[]string{"fetch", "--base-url", "127.0.0.1:8080"}, "--base-url"},
		{[]string{"fetch", "--base-url", "http://[::1"}, "--base-url"},
		{[]string{"fetch", "--base-url", "http:///x"}, "--base-url"},
		{fetch("--concurrency", "0"), "--concurrency"},
		{fetch("--concurrency", "100000"), "--concurrency"},
		{fetch("--concurrency", "many"), "--concurrency"},
		{fetch("--queue", "-1"), "--queue"},
		{fetch("--rate", "-1"), "--rate"},
		{fetch("--rate", "NaN"), "--rate"},
		{fetch("--burst", "-1"), "--burst"},
		{fetch("--rate-host", "api.example.com"), "--rate-host"},
		{fetch("--rate-host", "api.example.com=fast"), "--rate-host"},
		{fetch("--rate-host", "api.example.com=1:0"), "--rate-host"},
		{fetch("--rate-per-host", "0"), "--rate-per-host"},
		{fetch("--max-attempts", "0"), "--max-attempts"},
		{fetch("--timeout", "0s"), "--timeout"},
		{fetch("--timeout", "soon"), "--timeout"},
		{fetch("-H", "no colon"), "--header"},
		{fetch("-H", ": v"), "--header"},
		{fetch("--refresh-path", "/auth/refresh", "--refresh-method", "GE T"), "--refresh-method"},
		{fetch("--refresh-path", "/auth/refresh", "--refresh-body", "[1]"), "--refresh-body"},
		{fetch("--refresh-path", "/auth/refresh", "--refresh-body", "{"), "--refresh-body"},
		{fetch("--refresh-path", "/auth/refresh", "--client-auth", "header"), "--client-auth"},
		{fetch("--refresh-path", "/auth/refresh", "--access-token-field", ""), "--access-token-field"},
		{fetch("--refresh-path", "/auth/refresh", "--refresh-token-field", ""), "--refresh-token-field"},
		{fetch("--refresh-path", "http://[::1/refresh"), "--refresh-path"},
		{fetch("--refresh-path", "/a", "--token-url", "/b"), "--refresh-path"},
		{fetch("--grant", "password"), "--grant"},
		{fetch("--grant", "client_credentials"), "--token-url"},
		{fetch("--token-url", "http://[::1"), "--token-url"},
		{fetch("--scope", "read"), "--scope"},
		{fetch("--token-file", missing), "--token-file"},
		{fetch("--max-line", "0"), "--max-line"},
		{fetch("--max-line", "2GiB"), "--max-line"},
		{fetch("--max-body", "lots"), "--max-body"},
		{fetch("--upload-root", missing), "--upload-root"},
		{fetch("--log-level", "loud"), "--log-level"},
		{fetch("--out", missing), "--out"},
		{fetch("--resume"), "--resume"},
		{fetch("--progress=maybe"), "--progress"},
		{fetch("--summary=maybe"), "--summary"},
		{fetch("--fleet", "crawl"), "--fleet"},
		{fetch("--lock-lease", "5s"), "--lock-lease"},
		{fetch("--redis", redis, "--lock-lease", "-1s"), "--lock-lease"},
		{fetch("--redis", redis, "--fleet", "a b"), "--fleet"},
		{fetch("--redis", "http://127.0.0.1:1"), "--redis"},
		{fetch("--redis", redis, "--batch", "orders*"), "--batch"},
		{fetch("--redis", redis, "--batch", "orders", "--lease", "1ms"), "--lease"},
		{fetch("--batch", "orders"), "--redis"},
		{fetch("a.txt", "b.txt"), "FILE"},
		{[]string{"collect", "--redis", redis, "--batch", "orders*"}, "--batch"},
		{[]string{"collect", "--redis", "http://127.0.0.1:1", "--batch", "orders"}, "--redis"},
		{[]string{"collect", "--batch", "orders"}, "--redis"},
		{[]string{"collect", "--redis", redis}, "--batch"},
		{[]string{"batch", "status", "--redis", redis, "orders*"}, "NAME"},
		{[]string{"batch", "status", "--redis", "http://127.0.0.1:1", "orders"}, "--redis"},
		{[]string{"demo", "--requests", "0"}, "--requests"},
		{[]string{"demo", "--concurrency", "0"}, "--concurrency"},
		{[]string{"demo", "--fleet", "-1"}, "--fleet"},
		{[]string{"serve-demo", "--addr", "nowhere"}, "--addr"},
		{[]string{"serve-demo", "--addr", "127.0.0.1:0", "--access-uses", "-1"}, "--access-uses"},
		{[]string{"serve-demo", "--addr", "127.0.0.1:0", "--access-ttl", "-1s"}, "--access-ttl"},
		{[]string{"serve-demo", "--addr", "127.0.0.1:0", "--flaky-percent", "101"}, "--flaky-percent"},
		{[]string{"serve-demo", "--addr", "127.0.0.1:0", "--token-file", missing}, "--token-file"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := courier(t, "/items/1\n", nil, tc.args...)
			assert.Equal(t, exitUsage, r.code, r.stderr)
			assert.Contains(t, r.stderr, tc.flag)
			assert.NotContains(t, r.stderr, "Usage of ")
		})
	}
}
