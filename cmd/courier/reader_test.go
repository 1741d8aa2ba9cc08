package main

import (
	"io"
	"strings"
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
		assert.Equal(t, []rawLine{{n: 1, text: "/a"}}, first)
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

// TestInputBatchesWhatIsBufferedAndNeverWaitsForTheNextLine: the lines
// read in one go travel together, in order, and a line is handed over
// without waiting for the next one to arrive.
func TestInputBatchesWhatIsBufferedAndNeverWaitsForTheNextLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		in := newInput(func() (io.ReadCloser, error) { return pr, nil }, defaultMaxLine, &lineParser{})
		defer in.Stop()
		_, err := io.WriteString(pw, "/a\n# note\n/b\n")
		require.NoError(t, err)
		assert.Equal(t, []rawLine{{n: 1, text: "/a"}, {n: 2, text: "# note"}, {n: 3, text: "/b"}}, <-in.lines)
		_, err = io.WriteString(pw, "/c\n/d") // /d is not whole yet
		require.NoError(t, err)
		assert.Equal(t, []rawLine{{n: 4, text: "/c"}}, <-in.lines, "/c goes without waiting for /d's end")
		require.NoError(t, pw.Close())
		assert.Equal(t, []rawLine{{n: 5, text: "/d"}}, <-in.lines)
		_, open := <-in.lines
		assert.False(t, open)
		assert.NoError(t, in.Err())
	})
}

// TestInputBatchesAreBounded: a large input goes in batches of at most
// maxBatchLines lines, every line once and in order.
func TestInputBatchesAreBounded(t *testing.T) {
	var text strings.Builder
	const lines = 3*maxBatchLines + 7
	for range lines {
		text.WriteString("/x\n")
	}
	in := newInput(openInput("", strings.NewReader(text.String())), defaultMaxLine, &lineParser{})
	defer in.Stop()
	n := 0
	for batch := range in.lines {
		require.NotEmpty(t, batch)
		assert.LessOrEqual(t, len(batch), maxBatchLines)
		for _, l := range batch {
			n++
			require.Equal(t, n, l.n)
		}
	}
	assert.Equal(t, lines, n)
	assert.NoError(t, in.Err())
}
