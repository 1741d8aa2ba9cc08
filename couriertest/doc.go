// Package couriertest is a test kit for code built on courier, as
// net/http/httptest is for handlers: an API server that behaves as the
// APIs courier talks to do, and a RoundTripper that records real
// exchanges and replays them.
//
// [NewServer] starts the API on a loopback port ([NewAPI] makes the bare
// [http.Handler]). Its access tokens expire after a number of uses
// ([WithTokenUses]), a lifetime ([WithTokenTTL]) or at once
// ([API.ExpireTokens]); refresh tokens rotate, and one presented again
// after it was rotated away revokes its session, as real servers do.
// Faults are scripted per path ([WithFaults]: a status such as 503 or 429
// with Retry-After, a connection reset, a slow body), quotas answer in the
// RateLimit header fields ([WithRateLimit]), items carry ETags and answer
// 304 to If-None-Match, and GET /items pages with Link headers, offsets or
// cursors. [API.Stats] counts what the server saw (refreshes, reused
// refresh tokens, 401s, requests per path) for tests to assert on.
// [API.Tokens] and [API.Auth] give a client its first session.
// [API.RoundTripper] serves the API in process, for tests in a
// testing/synctest bubble, where waits take virtual time.
//
// [Record] wraps a transport and writes every exchange to a directory,
// with tokens, cookies, Authorization and other credentials redacted;
// [Replay] answers from such a directory without a network, matching
// requests by method, URL and body digest, and fails a request it has no
// answer for with an error that says which.
package couriertest
