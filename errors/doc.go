// Package errors is a drop-in for the standard library's errors package that
// also holds courier's sentinels and error types, so code that handles
// courier's failures needs no import alias.
//
// [Is], [As], [AsType], [New], [Join], [Unwrap] and [ErrUnsupported] are
// the standard package's, all of them (a test compares the two packages'
// exported names). The sentinels ([ErrSessionExpired], [ErrRefreshFailed], [ErrQueueFull],
// [ErrClosed], [ErrResponseTooLarge], [ErrRetryBudgetExhausted], [ErrBodyNotReplayable],
// [ErrCircuitOpen], [ErrLockLost]) are matched
// with [Is]; the types ([HTTPError], [RequestError], [PanicError]) are
// extracted with [As]. Every error a courier future fails with matches at
// least one of them, or is the context's own error when the caller gave up.
//
// Every URL in courier's errors has had its user info, query and fragment
// removed.
package errors
