// Package engine is courier's request engine: callers submit
// [requests.Request]s and get [Future]s, and a small set of goroutines does
// the rest.
//
// The dispatcher goroutine (dispatcher.go) owns the bounded queue
// (queue.go), the dedup table, the set of requests parked on a token
// refresh, and the pause state of an expired session; it never does I/O and
// never blocks. Workers (worker.go) run one attempt each: they wait on the
// rate limiter, read the current token from an atomic snapshot, run the
// middleware chain and the HTTP call, read the body (bounded) and report
// back. The token actor (tokenactor.go) owns the tokens and serializes
// refresh: however many requests get 401 with the same token, one refresh
// call is made, each parked request is replayed once, and queued requests
// that would carry the rejected token wait for the new one instead of
// collecting 401s of their own. Every goroutine is
// owned by the [Engine] and stopped by [Engine.Shutdown] or [Engine.Close].
//
// Time comes from a [Clock], so backoff, Retry-After, rate limiting and
// proactive refresh can be driven by hand in tests.
//
// # Guarantees
//
// Tokens and refresh:
//
//   - Every refresh demand is answered: with a new token, with
//     ErrRefreshFailed for the requests that waited on it (the session goes
//     on), or with ErrSessionExpired. [Engine.SetTokens] and
//     [Engine.TerminateSession] during a refresh void that refresh (its
//     answer is never used) and never leave a request waiting: a request
//     rejected with the tokens SetTokens gave gets a refresh of its own.
//   - A token is refreshed ahead of its known expiry at most once, and never
//     sooner than a second after the previous refresh, whatever lifetime the
//     server reports.
//   - A token whose known expiry has passed is not sent: requests that would
//     carry it wait for a refresh, as they do after a 401. An idle engine
//     does not refresh until a request needs the token. (A token issued with
//     a lifetime under a second is used until a second after its refresh.)
package engine
