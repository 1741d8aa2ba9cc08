package errors_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"

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
