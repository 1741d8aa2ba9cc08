package errors_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/courier-go/courier/errors"
)

func TestSentinelsMatchThroughWrapping(t *testing.T) {
	err := fmt.Errorf("%w: %w", errors.ErrRetryBudgetExhausted, &errors.HTTPError{Status: 503, Method: "GET", URL: "http://x/y", Attempts: 2})
	assert.True(t, errors.Is(err, errors.ErrRetryBudgetExhausted))
	var he *errors.HTTPError
	assert.True(t, errors.As(err, &he))
	assert.Equal(t, 503, he.Status)
	assert.False(t, errors.Is(err, errors.ErrSessionExpired))
}

func TestRequestErrorReportsTimeouts(t *testing.T) {
	re := &errors.RequestError{Method: "GET", URL: "http://x/", Attempts: 3, Err: &url.Error{Op: "Get", URL: "http://x/", Err: context.DeadlineExceeded}}
	assert.True(t, re.Timeout())
	assert.True(t, errors.Is(re, context.DeadlineExceeded))
	assert.Contains(t, re.Error(), "(attempts 3)")
	assert.False(t, (&errors.RequestError{Err: errors.New("refused")}).Timeout())
}

func TestHTTPErrorMessage(t *testing.T) {
	e := &errors.HTTPError{Status: 429, Method: "GET", URL: "https://api/x", Attempts: 1, RetryAfter: 90e9, Reason: "Retry-After wait of 1m30s does not fit the deadline"}
	assert.Equal(t, "courier: GET https://api/x: 429 Too Many Requests (attempts 1, retry after 1m30s): Retry-After wait of 1m30s does not fit the deadline", e.Error())
}

func TestPanicErrorUnwrapsErrorValues(t *testing.T) {
	pe := &errors.PanicError{Where: "middleware", Value: context.Canceled}
	assert.True(t, errors.Is(pe, context.Canceled))
	assert.Equal(t, "courier: panic in middleware: context canceled", pe.Error())
}

func TestCircuitOpenErrorSaysWhenAndWhy(t *testing.T) {
	last := &errors.HTTPError{Status: 503, Method: "GET", URL: "http://api/x", Attempts: 1}
	until := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var err error = &errors.RequestError{Method: "GET", URL: "http://api/y", Err: &errors.CircuitOpenError{Host: "api", Until: until, Err: last}}
	assert.True(t, errors.Is(err, errors.ErrCircuitOpen))
	var coe *errors.CircuitOpenError
	ok := errors.As(err, &coe)
	assert.True(t, ok)
	assert.Equal(t, until, coe.Until)
	var he *errors.HTTPError
	assert.True(t, errors.As(err, &he), "it wraps the last failure")
	assert.Equal(t, 503, he.Status)
	assert.Equal(t, "courier: circuit open for api until 2026-01-02T03:04:05Z: last failure: courier: GET http://api/x: 503 Service Unavailable (attempts 1)", coe.Error())
	assert.False(t, errors.Is(&errors.CircuitOpenError{Host: "api"}, errors.ErrClosed))
}
