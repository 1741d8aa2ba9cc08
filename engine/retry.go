package engine

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/requests"
)

// Attempt describes one finished attempt, for a [RetryPolicy]; a plain
// value, valid only during the call. The engine always sets Request and
// Number, so a policy is never given the zero Attempt.
type Attempt struct {
	Request *requests.Request
	// Number counts attempts from 1.
	Number int
	// Status and Header are the answer's; Status is 0 when none came.
	Status int
	Header http.Header
	// Err is the transport error when no answer came.
	Err error
	// NotSent is true when the request provably never reached the server:
	// the connection could not be made.
	NotSent bool
}

// RetryPolicy reports whether a failed attempt should be tried again. The
// engine calls it only for attempts that failed (no answer, or a status
// outside 2xx that is not an auth failure), and enforces MaxAttempts and the
// budget itself. It is called from several goroutines at once, so it must
// be safe for concurrent use. A nil RetryPolicy in [Retry.Policy]
// means [DefaultRetryPolicy].
type RetryPolicy func(a Attempt) bool

// Backoff returns the wait before retry number attempt (1 for the first
// retry), between zero and max. Retries of requests and of token refreshes
// call it from different goroutines, maybe at once, so it must be safe for
// concurrent use. A nil Backoff in [Retry.Backoff] means [DefaultBackoff].
type Backoff func(attempt int, base, max time.Duration) time.Duration

// DefaultBackoff is full-jitter exponential backoff: a uniformly random wait
// in [0, min(max, base·2^(attempt-1))].
func DefaultBackoff(attempt int, base, max time.Duration) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	ceil := base
	for i := 1; i < attempt && ceil < max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, max)
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil + 1)
}

// DefaultRetryPolicy retries connection errors, timeouts and the statuses
// 408, 429, 500, 502, 503 and 504, for idempotent methods (GET, HEAD,
// OPTIONS, TRACE, PUT, DELETE) and requests with an idempotency key. Other
// methods are retried only when the request never reached the server.
func DefaultRetryPolicy(a Attempt) bool {
	if a.NotSent {
		return true
	}
	if !Idempotent(a.Request) {
		return false
	}
	if a.Status == 0 {
		return a.Err != nil && !errors.Is(a.Err, context.Canceled)
	}
	return RetryableStatus(a.Status)
}

// RetryableStatus reports whether status is one that is worth another try:
// 408, 429, 500, 502, 503 and 504.
func RetryableStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Idempotent reports whether r may be sent twice safely: its method is
// idempotent, or it carries an idempotency key.
func Idempotent(r *requests.Request) bool {
	if r.IdempotencyKey != "" || r.Header.Get("Idempotency-Key") != "" {
		return true
	}
	switch r.MethodOrGet() {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace,
		http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// notSent reports whether err shows that no byte of the request reached the
// server: the dial failed.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// ParseRetryAfter reads a Retry-After value, in seconds or as an HTTP-date,
// relative to now. It reports false for a missing, malformed or negative
// value; a date in the past is a wait of zero.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(365*24*time.Hour/time.Second) {
			n = int64(365 * 24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// backoff calls the configured Backoff for retry number n. A panic in it
// becomes an error for the request at hand (it runs on the dispatcher or
// the token actor, which must keep running), a negative wait is zero and a
// wait past MaxDelay is MaxDelay.
func (e *Engine) backoff(n int) (wait time.Duration, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &errors.PanicError{Where: "Retry.Backoff", Value: v, Stack: debug.Stack()}
			e.log.Error().Interface("panic", v).Msg("panic in Retry.Backoff")
		}
	}()
	r := e.s.Retry
	// A policy's answer is kept between zero and MaxDelay, whatever it says.
	return min(max(r.Backoff(n, r.BaseDelay, r.MaxDelay), 0), r.MaxDelay), nil
}

// budget is the retry quota of the AWS SDKs' standard retry mode: a bucket
// that starts full; each retry takes its cost out, and successes put some
// back. A server that is down drains it and retries stop; ordinary
// flakiness, even a burst of it at the start of a batch, is paid for out of
// the full bucket and refunded as the retries succeed.
//
// Owned by the dispatcher goroutine.
type budget struct {
	disabled    bool
	capacity    int
	balance     int
	retryCost   int
	timeoutCost int
	refund      int
}

func newBudget(b Budget) *budget {
	return &budget{
		disabled:    b.Disabled,
		capacity:    b.Capacity,
		balance:     b.Capacity,
		retryCost:   b.RetryCost,
		timeoutCost: b.TimeoutCost,
		refund:      b.Refund,
	}
}

// withdraw reports whether a retry after a failed attempt may go, and takes
// its cost: TimeoutCost when the attempt got no answer (it timed out or the
// connection failed), RetryCost otherwise. It returns what it took, for
// the refund when the request succeeds.
func (b *budget) withdraw(noAnswer bool) (cost int, ok bool) {
	if b.disabled {
		return 0, true
	}
	cost = b.retryCost
	if noAnswer {
		cost = b.timeoutCost
	}
	if cost > b.balance {
		return 0, false
	}
	b.balance -= cost
	return cost, true
}

// refunded refunds n requests that succeeded at their first attempt.
func (b *budget) refunded(n int64) {
	if b.disabled || n == 0 {
		return
	}
	b.balance = int(min(int64(b.balance)+n*int64(b.refund), int64(b.capacity)))
}

// succeeded refunds a request that succeeded: what its retries cost, or
// Refund when it needed none. The bucket never grows past its capacity.
func (b *budget) succeeded(spent int) {
	if b.disabled {
		return
	}
	if spent == 0 {
		spent = b.refund
	}
	b.balance = min(b.balance+spent, b.capacity)
}

// Retry configures retries. Policy and Backoff are replaceable one at a
// time. The zero value is three attempts with the default policy, backoff
// and budget. It is a plain value, part of a [Config].
type Retry struct {
	// MaxAttempts bounds the attempts made because attempts failed: the
	// first and its retries. If zero, DefaultMaxAttempts; 1 disables
	// retries. A replay after a token refresh (the request was rejected with
	// a token since replaced, and is sent again with the new one) is not a
	// retry and does not use it up: a request is replayed at most twice, so
	// it may take up to MaxAttempts+2 attempts in all. Response.Attempts and
	// the errors' Attempts count every attempt that reached the transport,
	// replays included.
	MaxAttempts int
	// Policy decides whether a failed attempt is retried. If nil,
	// DefaultRetryPolicy.
	Policy RetryPolicy
	// Backoff computes the wait before a retry when the server asked for
	// none. If nil, DefaultBackoff. Its answer is kept between zero and
	// MaxDelay.
	Backoff Backoff
	// BaseDelay and MaxDelay feed Backoff. If zero, DefaultBaseDelay and
	// DefaultMaxDelay.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// MaxRetryAfter caps the wait a Retry-After header may ask for. If zero,
	// DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Budget stops retry storms against a server that is down.
	Budget Budget
}

// Budget is the retry quota shared by every request of an engine, as the
// AWS SDKs' standard retry mode has it: a bucket of Capacity tokens that
// starts full. A retry takes RetryCost tokens out (TimeoutCost when the
// failed attempt timed out or its connection failed); a request that
// succeeds on its first attempt puts Refund back, and one that succeeds
// after retries puts back what its retries took. A retry the bucket cannot
// pay is not sent: the request fails with ErrRetryBudgetExhausted wrapping
// its last error.
//
// So a burst of ordinary flakiness is paid from the full bucket (100
// requests each failing once cost 500 and are refunded as they succeed),
// while n requests to a server that is down make at most
// n + Capacity/RetryCost upstream calls. The zero value is the default
// budget, on; each zero field means its default. A Budget is a plain value
// that configures the bucket; the bucket itself is the engine's own, never
// shared with another engine.
type Budget struct {
	// Capacity is the size of the bucket, and what it holds at the start.
	// If zero, DefaultBudgetCapacity.
	Capacity int
	// RetryCost is what a retry after an answer (a 503, say) takes. If
	// zero, DefaultRetryCost.
	RetryCost int
	// TimeoutCost is what a retry after an attempt that got no answer (a
	// timeout, a refused or reset connection) takes. If zero,
	// DefaultTimeoutCost.
	TimeoutCost int
	// Refund is what a request that succeeds on its first attempt puts
	// back. If zero, DefaultRefund.
	Refund int
	// Disabled turns the budget off: retries are limited by
	// Retry.MaxAttempts alone.
	Disabled bool
}
