//go:build go1.26

package errors_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/errors"
)

type codeError struct{ code int }

func (e codeError) Error() string { return "code" }

func TestAsTypeFindsTheTypedErrorInTheTree(t *testing.T) {
	err := errors.Join(errors.New("other"), &errors.HTTPError{Status: 503})
	he, ok := errors.AsType[*errors.HTTPError](err)
	require.True(t, ok)
	assert.Equal(t, 503, he.Status)
	_, ok = errors.AsType[codeError](err)
	assert.False(t, ok)
	ce, ok := errors.AsType[codeError](errors.Join(codeError{7}))
	assert.True(t, ok)
	assert.Equal(t, 7, ce.code)
}
