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

	"github.com/courier-go/courier/errors"
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
  courier fetch --redis URL --batch NAME [FILE]
                                           add FILE to a batch on Redis, then work on it with other workers
  courier collect --redis URL --batch NAME [--out FILE] [--wait]
                                           a batch's results, in input order
  courier batch status|rm --redis URL NAME a batch's counters and workers; delete a batch

Run 'courier COMMAND --help' for a command's flags.
`

func main() {
	startHeapFloor() // for the process's life: os.Exit ends it
	ctx, stop := notifyContext(context.Background(), exitAtOnce, os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitAtOnce ends the process on a second signal, with that signal's
// status: the first one is still being handled (a refresh in flight is
// waited for), and the user wants out now. The token file is only ever
// replaced whole, by a rename, so it holds the old tokens or the new ones,
// never a mix.
func exitAtOnce(s stopSignal) {
	fmt.Fprintf(os.Stderr, "courier: %s again: exiting at once\n", signalName(s.sig))
	os.Exit(s.exitCode())
}

// stopSignal is the cause of a command's context when a signal ended it.
type stopSignal struct{ sig syscall.Signal }

func (s stopSignal) Error() string { return "stopped by " + signalName(s.sig) }

// exitCode is the shell's status for a process a signal ended: 128 plus
// its number (130 for SIGINT, 143 for SIGTERM).
func (s stopSignal) exitCode() int { return 128 + int(s.sig) }

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// stoppedBy returns the signal that ended ctx, if one did.
func stoppedBy(ctx context.Context) (stopSignal, bool) {
	var s stopSignal
	ok := errors.As(context.Cause(ctx), &s)
	return s, ok
}

// notifyContext is signal.NotifyContext whose cause names the signal (a
// stopSignal). The first signal cancels ctx; a second one calls second
// with it, which should end the process at once.
func notifyContext(parent context.Context, second func(stopSignal), sigs ...os.Signal) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for first := true; ; first = false {
			select {
			case s := <-ch:
				sig, _ := s.(syscall.Signal)
				if !first {
					second(stopSignal{sig})
					return
				}
				cancel(stopSignal{sig})
			case <-quit:
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(quit)
		<-done
		cancel(context.Canceled)
	}
}

// failer returns how command name reports a failure: the message on
// stderr, then the exit status code is returned; with hint, a usage error
// also points at the command's --help.
func failer(stderr io.Writer, name string, hint bool) func(code int, format string, a ...any) int {
	return func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "courier "+name+": "+format+"\n", a...)
		if hint && code == exitUsage {
			fmt.Fprintf(stderr, "Run 'courier %s --help' for usage.\n", name)
		}
		return code
	}
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
	case "collect":
		return runCollect(ctx, args[1:], stdout, stderr)
	case "batch":
		return runBatchCmd(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "courier: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}
