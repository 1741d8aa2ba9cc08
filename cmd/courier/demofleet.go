package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/courier-go/courier/internal/demo"
)

// fleetDemoUses is how many requests a demo access token serves.
const fleetDemoUses = 500

// runFleetDemo is `courier demo --fleet N`: N `courier fetch --redis`
// processes (this binary, run again) share one session of the demo API
// through a redis-server that the demo starts, and the server's counts
// show one refresh per token expiry for the whole fleet and no refresh
// token used twice.
func runFleetDemo(ctx context.Context, procs, requests, concurrency int, stdout, stderr io.Writer) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "courier demo: "+format+"\n", a...)
		return exitFailed
	}
	exe, err := os.Executable()
	if err != nil {
		return fail("finding this program to run it again: %v", err)
	}
	dir, err := os.MkdirTemp("", "courier-demo-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)
	redisURL, stopRedis, err := startDemoRedis(dir)
	if err != nil {
		return fail("%v", err)
	}
	defer stopRedis()

	api, err := demo.Start("127.0.0.1:0", demo.Config{AccessUses: fleetDemoUses})
	if err != nil {
		return fail("starting the demo API: %v", err)
	}
	defer api.Close()
	tk := api.Login()
	fmt.Fprintf(stdout, "demo API on %s: tokens expire every %d requests, refresh tokens rotate and a reused one ends the session\n", api.URL, fleetDemoUses)
	fmt.Fprintf(stdout, "redis-server on %s; %d courier fetch processes share one session and its refreshes\n\n", redisURL, procs)

	type outcome struct {
		ok, failed int
		code       int
		err        error
	}
	// The demo's --concurrency is the fleet's, split among the processes:
	// with many more requests in flight than a token serves, a replay can
	// find its fresh token already used up by the others.
	perProc := max(concurrency/procs, 1)
	outcomes := make([]outcome, procs)
	start := time.Now()
	var wg sync.WaitGroup
	for p := range procs {
		var in strings.Builder
		for i := p; i < requests; i += procs {
			fmt.Fprintf(&in, "/items/%d\n", i)
		}
		cmd := exec.CommandContext(ctx, exe, "fetch", "--base-url", api.URL,
			"--redis", redisURL, "--fleet", "demo", "--refresh-path", "/auth/refresh",
			"--concurrency", strconv.Itoa(perProc), "--summary=false", "--progress=false")
		// Tokens go to the processes in their environment, never in argv.
		cmd.Env = append(os.Environ(), "COURIER_TOKEN="+tk.AccessToken, "COURIER_REFRESH_TOKEN="+tk.RefreshToken)
		cmd.Stdin = strings.NewReader(in.String())
		cmd.Stderr = stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return fail("%v", err)
		}
		if err := cmd.Start(); err != nil {
			return fail("starting process %d: %v", p+1, err)
		}
		wg.Go(func() {
			o := &outcomes[p]
			sc := bufio.NewScanner(out)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var line struct {
					Error string `json:"error"`
				}
				if json.Unmarshal(sc.Bytes(), &line) == nil && line.Error == "" {
					o.ok++
				} else {
					o.failed++
				}
			}
			o.err = cmd.Wait()
			o.code = cmd.ProcessState.ExitCode()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	ok, failed, code := 0, 0, exitOK
	for p, o := range outcomes {
		fmt.Fprintf(stdout, "process %d: %d ok, %d failed, exit %d\n", p+1, o.ok, o.failed, o.code)
		ok += o.ok
		failed += o.failed
		if o.code != 0 || o.err != nil {
			code = exitFailed
		}
	}
	st := api.Stats()
	expiries := 0
	if ok > 0 {
		expiries = (ok - 1) / fleetDemoUses
	}
	fmt.Fprintf(stdout, "\nfleet       %d requests in %v: %d ok, %d failed\n", ok+failed, elapsed.Round(time.Millisecond), ok, failed)
	fmt.Fprintf(stdout, "server saw  %d refresh calls for %d token expiries (one token serves %d requests), %d reused refresh tokens, %d rejected tokens\n",
		st.Refreshes, expiries, fleetDemoUses, st.RefreshReuse, st.Unauthorized)
	if st.RefreshReuse > 0 || int(st.Refreshes) != expiries {
		code = exitFailed
	}
	return code
}

// startDemoRedis runs a private redis-server on a unix socket in dir, with
// nothing on disk, and returns its URL and a function that stops it.
func startDemoRedis(dir string) (string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, fmt.Errorf("--fleet needs redis-server on PATH (Debian and Ubuntu: apt-get install redis-server)")
	}
	socket := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700",
		"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("starting redis-server: %v", err)
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return "unix://" + socket, stop, nil
		}
	}
	stop()
	return "", nil, fmt.Errorf("redis-server did not start listening within 10s")
}
