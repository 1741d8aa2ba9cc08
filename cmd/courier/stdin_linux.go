package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// reopenStdin opens stdin afresh, non-blocking, so that the runtime polls
// it and a read deadline can interrupt a pending read; nil when stdin is
// not a pipe, FIFO or terminal (a regular file never blocks) or cannot be
// reopened. A new open file description is ours alone: setting it
// non-blocking does not change the descriptor the shell and the other
// processes of a pipeline share. Opening a FIFO non-blocking never waits
// for a writer; stdin's writer connected before we started.
func reopenStdin(f *os.File) io.ReadCloser {
	st, err := f.Stat()
	if err != nil || st.Mode()&(os.ModeNamedPipe|os.ModeCharDevice) == 0 {
		return nil
	}
	// Not f.Fd(), which would put a polled descriptor in blocking mode.
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	var fd uintptr
	if rc.Control(func(d uintptr) { fd = d }) != nil {
		return nil
	}
	r, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	return r
}
