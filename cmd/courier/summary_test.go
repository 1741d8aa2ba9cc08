package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// summaryCount reads the number on the summary line that starts with
// name.
func summaryCount(t *testing.T, stderr, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +([0-9.]+)`).FindStringSubmatch(stderr)
	require.NotNil(t, m, "the summary has a %q line:\n%s", name, stderr)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

// TestFetchSummaryAfterSIGTERMCountsNeverSentLinesApart pins what the
// summary says of a batch stopped with most of its lines still queued:
// they were not sent, so they are neither failed requests nor part of
// the throughput.
func TestFetchSummaryAfterSIGTERMCountsNeverSentLinesApart(t *testing.T) {
	const lines = 50
	var seen, blocked atomic.Int64
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if r.URL.Path == "/fast" {
			fmt.Fprint(w, `{"ok":true}`)
			return
		}
		blocked.Add(1)
		select { // answer nothing until courier gives up
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)

	r := startCourier(t, []string{"COURIER_TOKEN=t"}, "fetch", "--base-url", srv.URL, "--concurrency", "2")
	var in strings.Builder
	in.WriteString("/fast\n")
	for i := 2; i <= lines; i++ {
		fmt.Fprintf(&in, "/block/%d\n", i)
	}
	_, err := io.WriteString(r.stdin, in.String())
	require.NoError(t, err)
	require.NoError(t, r.stdin.Close())
	assert.Nil(t, r.line(t).Error, "line 1 is answered")
	require.Eventually(t, func() bool { return blocked.Load() == 2 }, 30*time.Second, 5*time.Millisecond,
		"both workers hold a request the server does not answer")

	code, rest := r.stop(t, syscall.SIGTERM)
	require.Equal(t, 143, code, r.stderr.String())
	require.Len(t, rest, lines-1, "every line gets its output line")
	stderr := r.stderr.String()
	// A queued request may still go out as the signal cancels it; the
	// summary counts it as it stood when its line was written. Its bytes
	// may reach the server's handler only after courier has exited: wait
	// for every line counted as sent to arrive.
	sent, notSent := summaryCount(t, stderr, "sent"), summaryCount(t, stderr, "not sent")
	require.Eventually(t, func() bool { return float64(seen.Load()) >= sent }, 10*time.Second, 5*time.Millisecond,
		"a line counted as sent never reached the server")
	assert.EqualValues(t, lines, summaryCount(t, stderr, "requests"))
	assert.EqualValues(t, 1, summaryCount(t, stderr, "ok"))
	assert.EqualValues(t, 1, summaryCount(t, stderr, "answered"))
	assert.GreaterOrEqual(t, sent, 3.0, "line 1 and the two held by the server went out")
	assert.EqualValues(t, sent-1, summaryCount(t, stderr, "failed"), "only lines that went out and got no 2xx failed")
	assert.EqualValues(t, lines-sent, notSent, "every other line was not sent")
	elapsed := regexp.MustCompile(`(?m)^elapsed +(\S+)$`).FindStringSubmatch(stderr)
	require.NotNil(t, elapsed, stderr)
	d, err := time.ParseDuration(elapsed[1])
	require.NoError(t, err)
	if d > time.Millisecond && d < time.Second {
		// elapsed is shown to the millisecond and throughput to the
		// request per second: the run took d give or take half a
		// millisecond, for one answer. From a second on, that precision
		// cannot tell one answer from two.
		lo, hi := 1/(d.Seconds()+0.0005)-0.5, 1/(d.Seconds()-0.0005)+0.5
		rate := summaryCount(t, stderr, "throughput")
		assert.True(t, lo <= rate && rate <= hi, "throughput %v counts the one answer in %v: want %.1f to %.1f", rate, d, lo, hi)
	}
}
