// Package engine is courier's request engine: callers submit
// [requests.Request]s and get [Future]s, and a small set of goroutines does
// the rest.
//
// The dispatcher goroutine (dispatcher.go) owns the bounded queue
// (queue.go), the calls it carries, the set of requests parked on a token
// refresh, and the pause state of an expired session; it never does I/O and
// never blocks. Workers (worker.go) run one attempt each: they wait for
// their turn (see Pacing), read the current token from an atomic
// snapshot, run the middleware chain and the HTTP call, read the body
// (bounded) and report back. Everything the dispatcher hears reaches it
// through its mailbox (mailbox.go), which it empties in one go each time it
// wakes, so one wake-up serves every submission and report made meanwhile.
// While nothing needs its judgement it opens an admission gate (gate.go):
// a request's first attempt then skips the mailbox, Submit's in an idle
// worker's place and Do's (and a RoundTrip's) on the caller's own
// goroutine, holding a place, so Workers still bounds what runs; only an
// outcome that needs the dispatcher (a retry, a 401, a held host) is
// handed to it. The dedup table (dedup.go) serves both paths, and
// resolve.go says who may resolve a future, and when. The token actor (tokenactor.go) owns the tokens and serializes
// refresh: however many requests get 401 with the same token, one refresh
// call is made, each parked request is replayed once, and queued requests
// that would carry the rejected token wait for the new one instead of
// collecting 401s of their own. Every goroutine is
// owned by the [Engine] and stopped by [Engine.Shutdown] or [Engine.Close].
//
// [Engine.RoundTripper] (roundtrip.go) puts the engine under any client or
// SDK that takes an *http.Client, streaming answers instead of reading
// them. OpenTelemetry spans and metrics (telemetry.go) are off until the
// [Config] names a provider.
//
// # Crawls and the cache
//
// [Engine.Pages] (pages.go) sends a collection's pages one after another
// through [Engine.Do], asking a [paginate.Paginator] for each next page,
// or, when the paginator can plan every remaining page, submits them a
// window ahead and yields them in order. [Config.Cache] (cache.go) is a
// private HTTP cache hooked into the request path in three places: a
// lookup in Submit before admission (a fresh entry resolves the future
// there), conditional headers when an attempt is built, and, once the
// answer is read, a 304 merged into the stored answer or a new answer
// stored. Dedup sits on top unchanged, so identical GETs share one
// conditional request.
//
// Time comes from a [Clock], so backoff, Retry-After, rate limiting,
// breaker cooldowns, hedge delays and proactive refresh can be driven by
// hand in tests.
//
// # Pacing
//
// Before every attempt (first attempts, retries and replays alike) the
// worker takes its turn (pacing.go). When the request's host, or its route
// when a [Route] override covers its path, is held, or the quota the
// server last announced for it is spent until a reset, the attempt is not
// made: the call goes back to the dispatcher, which re-queues it when the
// hold ends (a backoff timer, not counted as an attempt), so a held host
// never keeps a worker from other hosts. Otherwise the worker waits, with
// the request's context, for the key's token bucket (a per-host limit, a
// host's override or a route's), then for the global bucket. The wait is
// not part of the attempt's timeout. After the answer the worker reports it back: a
// Retry-After on a 429, or a RateLimit / X-RateLimit-* quota at zero,
// holds the key until then for every request, and a Retry-After on a 503
// holds the request's path (see [HoldScope]), each capped at
// Retry.MaxRetryAfter; each answer's quota replaces the one before, and a
// quota still above zero caps the attempts that may start until its reset
// (quotas of named resources, X-RateLimit-Resource, apart); a 429 backs the
// key's rate off multiplicatively (once per burst of attempts that were in
// flight together) and 2xx answers restore it additively, never above the
// configured limit. A host with no configured limit is unpaced until its
// first 429, and then paced from a learned ceiling (see [Adaptive]).
// [Stats] counts the holds and the 429s.
//
// Waiting and holding go through a [Limiter], keyed by [LimitKey]: the
// global key, a host's, or a host and route's. The default,
// [NewLocalLimiter], keeps buckets and holds in memory; a shared Limiter
// (package fleet's, on Redis) makes a fleet of processes respect one limit
// and share holds, while back-off and quota accounting stay per process.
// To implement one: Wait(ctx, key, rate) blocks until one more attempt
// under key fits rate (a GCRA on the store's clock works well; the rate
// passed may change between calls as the engine adapts it), Hold(key,
// until) publishes a hold that only ever extends, and HeldUntil(key)
// returns the latest hold from any process, cheaply, since it runs before
// every attempt. The engine calls none of them from the dispatcher, and
// the zero value of [RateLimit.Limiter], nil, means local limiting.
//
// # Circuit breakers and hedging
//
// Both are off until the [Config] asks, and both key their state by
// [LimitKey] as pacing does: a host, or a host and route.
//
// A [Breaker] (breaker.go) is consulted by the worker before an attempt
// waits for anything, and again after the rate limiter's wait: while the
// key's breaker is open the attempt fails at once, unsent, with a
// *errors.CircuitOpenError (matching errors.ErrCircuitOpen), which is
// final, so requests queued behind a dead host fail as their turn comes
// instead of waiting for its rate, and a retry to an open breaker fails
// too. The attempt's end is counted when it is over: connection errors,
// timeouts and 5xx as failures, 429s and cancelled attempts not at all,
// other answers as successes. An answer to an attempt let through before
// the breaker last changed state is ignored. A [BreakerStore] shares
// openings between engines (package fleet has one on Redis); each engine
// half-opens and probes on its own.
//
// A [Hedge] (hedge.go) races a second copy of a slow attempt of an
// idempotent request: the worker starts the first copy on a goroutine,
// arms a timer for the delay, and when it fires, and the breaker is
// closed, the budget allows and the rate limiter lets it through without
// a hold, sends the second. The first answer wins; the worker cancels the
// other copy and takes its result (closing any answer it got) before the
// attempt goes on, so both goroutines end with the attempt.
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
//   - Only a 401 from the base URL's origin to a request that carried the
//     engine's token demands a refresh; a 401 from another origin (directly
//     or after a redirect) is returned as it is.
//   - A refresh answer whose access token is not an RFC 6750 b64token (for
//     Bearer; a valid header value otherwise), or whose refresh token has
//     characters outside RFC 6749 VSCHAR, is unparseable: the session ends.
//
// Secrets:
//
//   - The token goes only to the base URL's origin, never on a redirect
//     elsewhere. On a redirect that leaves the request's origin, the
//     sensitive headers are stripped: Authorization, Proxy-Authorization,
//     Cookie, the token's header, [Config.SensitiveHeaders] (by default
//     [DefaultSensitiveHeaders]) and the request's own
//     [requests.Request.SensitiveHeaders]. A redirect back does not bring
//     them back.
//   - A refresh call follows redirects only within the refresh endpoint's
//     origin: a redirect elsewhere fails the refresh at once
//     (ErrRefreshFailed, the session goes on) before anything is sent there.
//   - Dedup never merges requests whose caller-set headers differ,
//     credentials included; only the engine's own token is left out of the
//     key, and credentials enter it as digests.
//   - No error or log line holds a URL's query string or user info: those
//     of the request, of a redirect's target and of the refresh endpoint are
//     redacted, in the engine's errors and in the transport errors they wrap.
//
// Failures and their accounts:
//
//   - A failure that no retry can fix fails at its first attempt, with its
//     cause: a TLS certificate that does not verify, a header the transport
//     refuses (a caller's invalid header fails at Submit, naming it), a
//     redirect loop, a refresh endpoint answering 404 or another status
//     that will not change.
//   - Attempts (in [requests.Response], [errors.HTTPError] and
//     [errors.RequestError]) count every attempt that reached the transport,
//     retries and replays after a token refresh included. A request that
//     was sent and then failed with ErrRefreshFailed or ErrSessionExpired
//     fails with a *errors.RequestError that says how many. Replays do not
//     use up [Retry].MaxAttempts: a request may take up to MaxAttempts+2
//     attempts.
//   - A body read into memory costs about its size; one past
//     MaxResponseBytes fails with ErrResponseTooLarge having cost about the
//     limit. The limit counts the bytes after the transport has unpacked
//     them, so a gzip bomb meets it.
//
// Caller mistakes get errors, never a panic or a stall: a nil context
// fails the request (Await and Shutdown return an error too), and a
// Backoff policy's wait is kept within [0, MaxDelay].
package engine
