// Package requests describes what callers send to a courier engine and what
// they get back: [Request], with a replayable [Body] and per-request
// [Option]s, and [Response], with the status, headers, body bytes, attempts
// and duration of the final attempt. [Decode] turns a JSON response into a
// value of any type.
//
// A Request is a description, not a connection: the engine may send it several
// times (retries, a replay after a token refresh), opening its Body afresh for
// each attempt, so every body here can be read from byte 0 again.
package requests
