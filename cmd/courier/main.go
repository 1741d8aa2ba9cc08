// Command courier puts courier's engine to work: `courier demo` shows it
// against a built-in demo API, `courier serve-demo` runs that API alone, and
// `courier fetch` is a batch fetcher for authenticated APIs, one request per
// input line and one JSON result per output line, in input order.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses.
const (
	exitOK      = 0 // every request got a 2xx
	exitFailed  = 1 // some request failed
	exitUsage   = 2 // bad flags, arguments or configuration
	exitExpired = 3 // the session expired
)

const usage = `courier: a concurrent request engine for authenticated APIs

Usage:
  courier demo [flags]                     fetch a few thousand requests from a built-in demo API
  courier serve-demo [--addr HOST:PORT]    run the demo API alone
  courier fetch --base-url URL [flags] [FILE]
                                           one request per line of FILE (or stdin), one JSON result per line

Run 'courier COMMAND --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "serve-demo":
		return runServeDemo(ctx, args[1:], stdout, stderr)
	case "fetch":
		return runFetch(ctx, args[1:], stdin, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "courier: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}
