package main

import (
	"fmt"
	"os"
	"syscall"
)

// raiseFileLimit raises this process's soft limit on open files to its
// hard limit: a c=256 row keeps several clients' pools of connections
// open at once. The Go runtime raises the soft limit for itself at start,
// but hands the original one to the processes it starts; set here, the
// raised limit also reaches the server child, courier, handfetch and
// redis-server.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "bench: reading the open-file limit:", err)
		return
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "bench: raising the open-file limit:", err)
	}
}
