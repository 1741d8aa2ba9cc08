// Package fleet shares one API session, one set of rate limits and one
// batch of work among many courier processes on many machines, through
// Redis.
//
// A crawler or worker fleet that shares one API account shares one OAuth
// client (with rotating refresh tokens) and one rate limit. Each process
// refreshing and pacing on its own breaks both: with rotation every refresh
// invalidates the others' tokens, and twenty processes each pacing at the
// account's limit send twenty times too much. This package keeps that shared
// state in Redis, and everything else local:
//
//   - [TokenStore] is an [engine.TokenStore] (set it as [engine.Auth].Store):
//     one key holds the tokens and their generation, a SET NX PX lease
//     serializes refresh across the fleet, and a Lua compare-and-swap
//     stores a refresh's answer, releases the lease and publishes the new
//     generation in one step.
//   - [Limiter] is an [engine.Limiter] (set it as [engine.RateLimit].Limiter):
//     GCRA in a Lua script on Redis's clock, one round trip per wait, and
//     holds (a 429 or 503 with Retry-After) that stop the whole fleet.
//   - [BreakerStore] is an [engine.BreakerStore] (set it as
//     [engine.Breaker].Store): a circuit breaker that trips in one process
//     opens it in every process, until the same moment, through a key
//     that expires then and a pub/sub notice.
//   - [Batch] spreads one input over any number of workers with Redis
//     Streams.
//
// [NewClient] connects to Redis from a redis://, rediss:// or unix:// URL.
// The fleet's name (see [CheckName] and [DefaultName]) prefixes every key.
//
// # When Redis fails
//
// Redis unreachable: no refresh is attempted, since the refresh lock cannot
// be taken ([TokenStore.Lock] keeps trying for [StoreOptions.Outage], then
// fails with [ErrUnavailable]). The current access token keeps working;
// requests that need a refresh wait for the lock and fail, once that bound
// has passed, with an error that says Redis was unavailable. Rate limiting
// falls back to a local share of each limit: the limit divided by the
// number of processes alive at the last heartbeat ([Limiter.Live]), until
// Redis answers again.
//
// Redis restarted: with persistence (appendonly yes) the tokens, their
// generation and the limits' state come back, and the fleet resumes where
// it was. Without it the store is empty, and the next process to start
// seeds it with the tokens it holds.
//
// One process cut off from Redis: it cannot take the lock, so it never
// sends a refresh token that the rest of the fleet may have rotated away
// meanwhile; once it reaches Redis again it adopts the newer generation.
//
// Only programs that import this package link the Redis client; the engine
// does not depend on it.
package fleet
