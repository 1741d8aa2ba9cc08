//go:build !linux

package main

import (
	"io"
	"os"
)

// reopenStdin returns nil: stdin is read as it is, and a read that blocks
// ends with the process rather than with the input goroutine's Stop.
func reopenStdin(*os.File) io.ReadCloser { return nil }
