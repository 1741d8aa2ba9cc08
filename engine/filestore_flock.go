//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"time"

	"github.com/courier-go/courier/errors"
)

const flockSupported = true

// flockWait takes an exclusive flock on f, polling until it is free or ctx
// ends. flock has no timeout of its own, and a blocked call cannot be
// cancelled, so it is tried without blocking.
func flockWait(ctx context.Context, f *os.File) error {
	pause := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return fmt.Errorf("token file lock: %w", err)
		}
		t := time.NewTimer(pause/2 + rand.N(pause))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// syncDir flushes a directory, making a rename in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("token file: syncing %s: %w", dir, err)
	}
	return nil
}
