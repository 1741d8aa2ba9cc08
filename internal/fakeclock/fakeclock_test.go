package fakeclock_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/courier-go/courier/internal/fakeclock"
)

func TestTimersFireOnlyWhenAdvanced(t *testing.T) {
	c := fakeclock.New(time.Unix(0, 0))
	tm := c.NewTimer(2 * time.Second)
	var fired atomic.Bool
	done := make(chan struct{})
	c.AfterFunc(time.Second, func() { fired.Store(true); close(done) })
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second}, c.Pending())

	c.Advance(time.Second)
	<-done
	assert.True(t, fired.Load())
	select {
	case <-tm.C():
		t.Fatal("fired early")
	default:
	}
	c.Advance(time.Second)
	assert.Equal(t, time.Unix(2, 0), <-tm.C())
	assert.False(t, tm.Stop(), "already fired")
	assert.Empty(t, c.Pending())
}
