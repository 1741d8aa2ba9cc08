package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/courier-go/courier/internal/fakeclock"
)

func TestOTLPErrorsTellEachKindOncePerInterval(t *testing.T) {
	var out bytes.Buffer
	clock := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := newOTLPErrors(&out, nil)
	h.now = clock.Now
	refused := errors.New(`traces export: Post "http://127.0.0.1:4318/v1/traces": connect: connection refused`)

	// Many goroutines at once, as the SDK's exporters report.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				h.Handle(refused)
			}
		})
	}
	wg.Wait()
	h.Handle(errors.New("failed to upload metrics: 3 points dropped"))
	h.Handle(errors.New("failed to upload metrics: 17 points dropped")) // the same kind
	assert.Equal(t, "courier fetch: --otlp: "+refused.Error()+"\n"+
		"courier fetch: --otlp: failed to upload metrics: 3 points dropped\n", out.String(),
		"one line per kind of error")

	out.Reset()
	clock.Advance(otlpErrorInterval)
	h.Handle(refused)
	assert.Equal(t, "courier fetch: --otlp: "+refused.Error()+" (99 more like it not shown)\n", out.String(),
		"an interval later, the kind is told again with the count of those not told")

	out.Reset()
	h.Handle(refused)
	h.Handle(refused)
	h.flush()
	assert.ElementsMatch(t, []string{
		"courier fetch: --otlp: " + refused.Error() + " (1 more like it not shown)",
		"courier fetch: --otlp: failed to upload metrics: 17 points dropped",
	}, strings.Split(strings.TrimSpace(out.String()), "\n"), "the end tells what was left untold")
	out.Reset()
	h.flush()
	assert.Empty(t, out.String(), "nothing is told twice")
}

func TestOTLPErrorsKeepSecretsAndMemoryBounded(t *testing.T) {
	var out bytes.Buffer
	h := newOTLPErrors(&out, nil)
	h.Handle(errors.New(`Post "https://user:hunter2@collector.example/v1/traces?api_key=s3cret": EOF`))
	assert.Equal(t, "courier fetch: --otlp: Post \"https://collector.example/v1/traces\": EOF\n", out.String())

	out.Reset()
	for i := range 1000 {
		h.Handle(fmt.Errorf("error kind %c%c", 'a'+i%26, 'a'+i/26%26))
	}
	assert.LessOrEqual(t, len(h.kinds), otlpMaxKinds+1, "kinds past the bound share one count")
	assert.LessOrEqual(t, strings.Count(out.String(), "\n"), otlpMaxKinds+1)
}
