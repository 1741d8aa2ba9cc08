package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// batchComparison runs one input through a single `courier fetch` and
// through a batch on Redis worked by four `courier fetch --batch`
// processes, against the demo API (`courier serve-demo`), taking turns; it
// reports what Redis costs per line. Then it measures how fast
// `courier fetch --resume` reads a checkpoint back.
func batchComparison() {
	lines := 20_000
	scanLines := 200_000
	if *quick {
		lines, scanLines = 2_000, 20_000
	}
	dir, err := os.MkdirTemp("", "courier-bench-batch-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	courier, _, err := buildBinaries(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return
	}

	fmt.Printf("## Batches: one `courier fetch` against four workers on Redis\n\n")
	rds, err := startRedis(dir)
	if err != nil {
		fmt.Printf("Not measured: %v.\n\n", err)
	} else {
		defer rds.stop()
		api, tokenFile, err := startDemo(courier, dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return
		}
		defer func() { api.Process.Kill(); api.Wait() }()
		fleetRounds(courier, rds, api, tokenFile, dir, lines)
	}
	resumeScan(courier, dir, scanLines)
}

// redisServer is a private redis-server on a unix socket.
type redisServer struct {
	cmd    *exec.Cmd
	socket string
}

func startRedis(dir string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is not on PATH")
	}
	s := &redisServer{socket: filepath.Join(dir, "redis.sock")}
	s.cmd = exec.Command(bin, "--port", "0", "--unixsocket", s.socket, "--unixsocketperm", "700",
		"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	for range 500 {
		if c, err := net.Dial("unix", s.socket); err == nil {
			c.Close()
			return s, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("redis-server did not start")
}

func (s *redisServer) stop() { s.cmd.Process.Kill(); s.cmd.Wait() }

func (s *redisServer) url() string { return "unix://" + s.socket }

// cpu returns the server's user and system CPU time so far.
func (s *redisServer) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// commands returns how many commands the server has processed.
func (s *redisServer) commands() int64 {
	c, err := net.Dial("unix", s.socket)
	if err != nil {
		return 0
	}
	defer c.Close()
	fmt.Fprintf(c, "INFO stats\r\n")
	r := bufio.NewReader(c)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return 0
		}
		if v, ok := strings.CutPrefix(l, "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
}

var demoURL = regexp.MustCompile(`demo API on (http://[0-9.:]+)`)

// startDemo runs `courier serve-demo` and returns it and its token file.
func startDemo(courier, dir string) (*exec.Cmd, string, error) {
	tokens := filepath.Join(dir, "tokens.json")
	// Tokens that do not expire: the workers share one token file, and
	// sharing a rotating session is the fleet token store's job, not
	// measured here.
	cmd := exec.Command(courier, "serve-demo", "--addr", "127.0.0.1:0", "--token-file", tokens, "--access-uses", "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := demoURL.FindStringSubmatch(sc.Text()); m != nil {
			go func() {
				for sc.Scan() {
				}
			}()
			cmd.Args = append(cmd.Args, m[1]) // remember the URL
			// The session's tokens are written once it listens, just
			// after the URL is printed.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if fi, err := os.Stat(tokens); err == nil && fi.Size() > 0 {
					return cmd, tokens, nil
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			return nil, "", fmt.Errorf("serve-demo wrote no %s", tokens)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, "", fmt.Errorf("serve-demo printed no URL")
}

func fleetRounds(courier string, rds *redisServer, api *exec.Cmd, tokenFile, dir string, lines int) {
	base := api.Args[len(api.Args)-1]
	input := filepath.Join(dir, "batch.txt")
	var sb strings.Builder
	for i := range lines {
		fmt.Fprintf(&sb, "/items/%d\n", i)
	}
	os.WriteFile(input, []byte(sb.String()), 0o600)
	run := func(args ...string) *exec.Cmd {
		cmd := exec.Command(courier, args...)
		cmd.Stderr = os.Stderr // a failing command says why
		if err := cmd.Start(); err != nil {
			panic(err)
		}
		return cmd
	}
	wait := func(cmds ...*exec.Cmd) {
		for _, c := range cmds {
			if err := c.Wait(); err != nil {
				fmt.Fprintf(os.Stderr, "bench: %v: %v\n", c.Args[1:4], err)
			}
		}
	}
	common := []string{"--base-url", base, "--token-file", tokenFile, "--summary=false"}
	var single, fleet, collect, cmdsPerLine, cpuPerLine []float64
	for round := range *rounds {
		one := func() {
			start := time.Now()
			wait(run(append(append([]string{"fetch"}, common...), "--concurrency", "16", "--out", filepath.Join(dir, "single.jsonl"), input)...))
			single = append(single, time.Since(start).Seconds())
		}
		four := func() {
			name := fmt.Sprintf("bench-%d", round)
			worker := append(append([]string{"fetch"}, common...), "--concurrency", "4", "--redis", rds.url(), "--batch", name)
			cmds0, cpu0 := rds.commands(), rds.cpu()
			start := time.Now()
			ws := []*exec.Cmd{run(append(worker, input)...)}
			for range 3 {
				ws = append(ws, run(append(worker, "--wait-for-batch")...))
			}
			wait(ws...)
			fleet = append(fleet, time.Since(start).Seconds())
			start = time.Now()
			wait(run("collect", "--redis", rds.url(), "--batch", name, "--out", filepath.Join(dir, "fleet.jsonl")))
			collect = append(collect, time.Since(start).Seconds())
			cmdsPerLine = append(cmdsPerLine, float64(rds.commands()-cmds0-2)/float64(lines))
			cpuPerLine = append(cpuPerLine, float64(rds.cpu()-cpu0)/float64(time.Microsecond)/float64(lines))
			wait(run("batch", "rm", "--redis", rds.url(), "--base-url", base, name))
		}
		if round%2 == 0 {
			one()
			four()
		} else {
			four()
			one()
		}
	}
	s, f, c := median(single), median(fleet), median(collect)
	ratios := make([]float64, len(single))
	for i := range single {
		ratios[i] = single[i] / fleet[i]
	}
	slices.Sort(ratios)
	fmt.Printf("%d lines of `GET /items/N` against `courier serve-demo`, 16 in flight in all (one process with --concurrency 16, or four workers with --concurrency 4 each, the first adding the input to the batch); median of %d rounds, taking turns. The fleet's time runs from the first worker's start to the last one's exit; collect reads the results back in order afterwards. Every process shares the machine's two cores with the demo API and Redis.\n\n", lines, *rounds)
	fmt.Println("| run | seconds | lines/s | ratio: min / median / max of the rounds |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	fmt.Printf("| courier fetch, one process | %.2f | %.0f | 1.000 |\n", s, float64(lines)/s)
	fmt.Printf("| courier fetch --batch, four workers | %.2f | %.0f | %.3f / %.3f / %.3f |\n", f, float64(lines)/f, ratios[0], median(ratios), ratios[len(ratios)-1])
	fmt.Printf("| courier collect | %.2f | %.0f | |\n\n", c, float64(lines)/c)
	fmt.Printf("Redis per line (adding, working, collecting, removing): %.2f commands (a script counts with every command it runs), %.1f µs of redis-server CPU.\n\n", median(cmdsPerLine), median(cpuPerLine))
}

// resumeScan writes a checkpoint that answers every line of an input and
// times `courier fetch --resume` reading it back (it fetches nothing).
func resumeScan(courier, dir string, lines int) {
	input, out := filepath.Join(dir, "scan.txt"), filepath.Join(dir, "scan.jsonl")
	in, err := os.Create(input)
	if err != nil {
		panic(err)
	}
	cp, err := os.Create(out)
	if err != nil {
		panic(err)
	}
	iw, cw := bufio.NewWriter(in), bufio.NewWriter(cp)
	for i := 1; i <= lines; i++ {
		text := fmt.Sprintf("/items/%d", i)
		h := sha256.Sum256([]byte(text))
		fmt.Fprintln(iw, text)
		fmt.Fprintf(cw, `{"line":%d,"id":null,"method":"GET","path":%q,"status":200,"attempts":1,"duration_ms":1.234,"body":{"id":"%d","name":"item-%d","price":12.34},"hash":"%s"}`+"\n",
			i, text, i, i, hex.EncodeToString(h[:16]))
	}
	iw.Flush()
	cw.Flush()
	in.Close()
	cp.Close()
	st, _ := os.Stat(out)
	var took []float64
	for range *rounds {
		cmd := exec.Command(courier, "fetch", "--base-url", "http://127.0.0.1:9", "--resume", "--out", out, "--summary=false", input)
		start := time.Now()
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: resume scan: %v: %s\n", err, b)
			return
		}
		took = append(took, time.Since(start).Seconds())
	}
	t := median(took)
	fmt.Printf("### Resume scan\n\n`courier fetch --resume` over a checkpoint that answers all %d lines (%.1f MiB): it reads the file back, checks every line's hash against the input and fetches nothing. Median of %d runs, process start included.\n\n", lines, float64(st.Size())/(1<<20), *rounds)
	fmt.Println("| lines | seconds | lines/s | MiB/s |")
	fmt.Println("| ---: | ---: | ---: | ---: |")
	fmt.Printf("| %d | %.3f | %.0f | %.0f |\n\n", lines, t, float64(lines)/t, float64(st.Size())/(1<<20)/t)
}
