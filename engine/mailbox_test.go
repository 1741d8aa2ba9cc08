package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tokens counts the wake tokens waiting, taking them.
func tokens(m *mailbox) int {
	n := 0
	for {
		select {
		case <-m.wake:
			n++
		default:
			return n
		}
	}
}

// TestMailboxWakesASleepingDispatcherOnce: every delivery made while the
// dispatcher sleeps is taken in one go after one wake-up, and nobody
// blocks.
func TestMailboxWakesASleepingDispatcherOnce(t *testing.T) {
	m := newMailbox()
	require.True(t, m.sleep(false, 2, nil), "an empty mailbox lets the dispatcher sleep")
	require.True(t, m.post("a"))
	require.True(t, m.post("b"))
	require.True(t, m.report(outcome{}, false))
	assert.Equal(t, 1, tokens(m), "one wake-up for the three deliveries")

	var b mail
	m.take(&b)
	assert.Equal(t, []any{"a", "b"}, b.msgs, "messages in the order delivered")
	assert.Len(t, b.reports, 1)
	require.True(t, m.post("c"))
	assert.Zero(t, tokens(m), "no wake-up while the dispatcher is awake")
	assert.False(t, m.sleep(false, 2, nil), "no sleep with mail waiting")
}

// TestMailboxLazyReportsWaitUnlessTheDispatcherIsEager: a lazy report does
// not wake a dispatcher that has no work for the worker, and does wake one
// that has.
func TestMailboxLazyReportsWaitUnlessTheDispatcherIsEager(t *testing.T) {
	m := newMailbox()
	require.True(t, m.sleep(false, 2, nil))
	require.True(t, m.report(outcome{}, true))
	assert.Zero(t, tokens(m), "a lazy report waits for the next wake-up")
	require.True(t, m.post("next"))
	assert.Equal(t, 1, tokens(m))
	var b mail
	m.take(&b)
	assert.Len(t, b.reports, 1, "the lazy report comes with the next take")

	require.True(t, m.sleep(true, 2, nil))
	require.True(t, m.report(outcome{}, true))
	assert.Equal(t, 1, tokens(m), "an eager dispatcher is woken by a lazy report")
}

// TestMailboxStaysUpForAWaitingSubmit: a Submit that counted itself as
// waiting for room keeps the dispatcher from sleeping, and its poke wakes
// one that went to sleep just before.
func TestMailboxStaysUpForAWaitingSubmit(t *testing.T) {
	m := newMailbox()
	a := newAdmission(1)
	a.waiting.Add(1)
	assert.False(t, m.sleep(false, 2, a), "a waiter counted before the check keeps it up")
	a.waiting.Add(-1)
	require.True(t, m.sleep(false, 2, a))
	a.waiting.Add(1)
	m.poke()
	assert.Equal(t, 1, tokens(m), "a waiter counted after the check wakes it")
}

// TestMailboxRefusesAfterClose: once the dispatcher has exited, nothing is
// delivered, so the deliverer answers for it.
func TestMailboxRefusesAfterClose(t *testing.T) {
	m := newMailbox()
	require.True(t, m.post("before"))
	m.close()
	assert.False(t, m.post("after"))
	assert.False(t, m.report(outcome{}, false))
	var b mail
	m.take(&b)
	assert.Equal(t, []any{"before"}, b.msgs, "what came before close is still taken")
}

// TestMailboxLazyReportsDoNotWaitForEver: lazy reports hold their calls and
// answers until the dispatcher takes them, so the last report of the jobs
// out (the engine goes idle) wakes it, and so does a pile of them.
func TestMailboxLazyReportsDoNotWaitForEver(t *testing.T) {
	m := newMailbox()
	require.True(t, m.sleep(false, 2, nil))
	require.True(t, m.report(outcome{}, true))
	assert.Zero(t, tokens(m), "one job still out")
	require.True(t, m.report(outcome{}, true))
	assert.Equal(t, 1, tokens(m), "the last job out reported: the engine is idle")

	var b mail
	m.take(&b)
	require.True(t, m.sleep(false, 100, nil))
	for range lazyLimit - 1 {
		require.True(t, m.report(outcome{}, true))
	}
	assert.Zero(t, tokens(m))
	require.True(t, m.report(outcome{}, true))
	assert.Equal(t, 1, tokens(m), "lazyLimit reports waiting wake it")
}
