// Package fleet shares one API session and one rate limit among many
// courier processes on many machines, through Redis.
//
// A crawler or worker fleet that shares one API account shares one OAuth
// client (with rotating refresh tokens) and one rate limit. Each process
// refreshing and pacing on its own breaks both: with rotation every refresh
// invalidates the others' tokens, and twenty processes each pacing at the
// account's limit send twenty times too much. This package keeps that shared
// state in Redis, and everything else local.
//
// [NewClient] connects to Redis from a redis://, rediss:// or unix:// URL.
//
// Only programs that import this package link the Redis client; the engine
// does not depend on it.
package fleet
