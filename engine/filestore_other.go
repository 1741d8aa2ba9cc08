//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package engine

import (
	"context"
	"os"

	"github.com/courier-go/courier/errors"
)

// flockSupported is false: NewFileStore refuses, so these are never called.
const flockSupported = false

func flockWait(context.Context, *os.File) error { return errors.ErrUnsupported }

func syncDir(string) error { return errors.ErrUnsupported }
