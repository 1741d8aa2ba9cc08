package main

import (
	"io"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInputErrAfterStopDoesNotWaitForAStuckRead pins a hang: Err after Stop
// waited for the reading goroutine, which Stop leaves blocked when the read
// cannot be interrupted (a source without read deadlines), so whatever
// asked for the error after stopping waited as long as the input stayed
// quiet. In the bubble, that wait is a deadlock synctest reports.
func TestInputErrAfterStopDoesNotWaitForAStuckRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe() // no SetReadDeadline: Stop cannot interrupt its read
		in := newInput(func() (io.ReadCloser, error) { return pr, nil }, defaultMaxLine, &lineParser{})
		_, err := io.WriteString(pw, "/a\n")
		require.NoError(t, err)
		first := <-in.lines
		assert.Equal(t, rawLine{n: 1, text: "/a"}, first)
		synctest.Wait() // the goroutine is blocked reading line 2

		in.Stop()
		assert.NoError(t, in.Err(), "a read ended by Stop is no error, and Err does not wait for it")

		// The stuck read ends with its source; then the goroutine returns.
		pw.Close()
		<-in.done
		assert.NoError(t, in.Err())
	})
}

// TestInputErrReportsAReadErrorAfterStop: Stop does not hide an error that
// ended reading before it was called.
func TestInputErrReportsAReadErrorAfterStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		in := newInput(func() (io.ReadCloser, error) { return pr, nil }, defaultMaxLine, &lineParser{})
		pw.CloseWithError(io.ErrUnexpectedEOF)
		for range in.lines {
		}
		in.Stop()
		err := in.Err()
		require.Error(t, err)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		assert.Contains(t, err.Error(), "reading input after line 0")
	})
}
