package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFetchLogsErrorsToStderrByDefault pins that what the engine logs at
// error level (a panic in a hook, tokens that could not be stored) reaches
// the user without a flag, and nothing quieter does.
func TestFetchLogsErrorsToStderrByDefault(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		errorLine bool
	}{
		{nil, true},
		{[]string{"--log-level", "off"}, false},
	} {
		var o fetchOptions
		require.NoError(t, fetchFlags(&o).Parse(append([]string{"--base-url", "http://127.0.0.1:1"}, tc.args...)))
		var stderr bytes.Buffer
		cfg, err := o.config(&stderr)
		require.NoError(t, err)
		if !tc.errorLine {
			assert.Nil(t, cfg.Logger, "%v: no logger", tc.args)
			continue
		}
		require.NotNil(t, cfg.Logger, "%v", tc.args)
		cfg.Logger.Warn().Msg("a warning")
		cfg.Logger.Error().Msg("panic in hook")
		assert.Contains(t, stderr.String(), `"level":"error"`, "%v", tc.args)
		assert.Contains(t, stderr.String(), "panic in hook", "%v", tc.args)
		assert.NotContains(t, stderr.String(), "a warning", "%v: error level only", tc.args)
	}
}
