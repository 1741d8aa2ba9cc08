package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
)

// Bounds of fetch's flags.
const (
	defaultMaxLine = 16 << 20 // a JSON line with a large body fits
	maxMaxLine     = 1 << 30  // a line is held in memory whole
)

// limitOptions are fetch's guards against hostile input files, hostile
// servers and careless flags.
type limitOptions struct {
	maxLine, maxBody byteSize
	uploadRoot       string
}

func (o *limitOptions) flags(fs *pflag.FlagSet) {
	o.maxLine = defaultMaxLine
	fs.Var(&o.maxLine, "max-line", "longest input line, in bytes or with a KiB, MiB or GiB suffix; a longer line gets an error line and the batch goes on")
	o.maxBody = engine.DefaultMaxResponseBytes
	fs.Var(&o.maxBody, "max-body", "largest response body, in bytes or with a KiB, MiB or GiB suffix; a larger one fails its request")
	fs.StringVar(&o.uploadRoot, "upload-root", "", "uploads read files under this directory only, symlinks resolved; relative paths start there (default: the current directory)")
}

// apply checks the limits and sets them in cfg.
func (o *limitOptions) apply(cfg *engine.Config) error {
	if o.maxLine > maxMaxLine {
		return fmt.Errorf("--max-line %s: at most %s", o.maxLine, byteSize(maxMaxLine))
	}
	cfg.MaxResponseBytes = int64(o.maxBody)
	return nil
}
