package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/demo"
	"github.com/courier-go/courier/requests"
	"github.com/courier-go/courier/upload"
)

const demoUsage = `Usage: courier demo [flags]

Starts the demo API on a loopback port (tokens that expire, endpoints that
flake with 503 and 429 and Retry-After, resets, slow bodies) and fetches a
few thousand requests from it through the engine, duplicates and uploads
included, then prints a summary. Needs nothing outside the binary; with
--fleet, a redis-server on PATH.

Flags:
`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, demoUsage); fs.PrintDefaults() }
	n := fs.Int("requests", 3000, "how many requests to make")
	concurrency := fs.Int("concurrency", 32, "requests in flight at once")
	fleetN := fs.Int("fleet", 0, "run N courier fetch processes that share one session through a redis-server the demo starts (needs redis-server on PATH)")
	var showProgress bool
	progressFlag(fs, &showProgress)
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	fail := failer(stderr, "demo", true)
	switch {
	case *n < 1:
		return fail(exitUsage, "--requests must be at least 1, got %d", *n)
	case *concurrency < 1 || *concurrency > maxConcurrency:
		return fail(exitUsage, "--concurrency must be between 1 and %d, got %d", maxConcurrency, *concurrency)
	case *fleetN < 0:
		return fail(exitUsage, "--fleet must be 0 (one process) or a number of processes, got %d", *fleetN)
	case fs.NArg() > 0:
		return fail(exitUsage, "no arguments are taken, got %q", fs.Args())
	}
	if *fleetN > 0 {
		return runFleetDemo(ctx, *fleetN, *n, *concurrency, stdout, stderr)
	}

	// Tokens expire every 700 requests; a fifth of /flaky ids fail once.
	api, err := demo.Start("127.0.0.1:0", demo.Config{AccessUses: 700, FlakyPercent: 20})
	if err != nil {
		fmt.Fprintf(stderr, "courier demo: starting the demo API: %v\n", err)
		return exitFailed
	}
	defer api.Close()
	fmt.Fprintf(stdout, "demo API on %s: tokens expire every 700 requests, flaky endpoints answer 503/429 with Retry-After, some connections reset\n", api.URL)

	e, err := engine.New(engine.Config{
		BaseURL: api.URL,
		Workers: *concurrency,
		Auth:    engine.Auth{Refresh: &engine.RefreshConfig{Path: "/auth/refresh"}},
		// Holds as by default: a 503's Retry-After holds its /flaky path,
		// a 429's the whole API. The API's limit is known, as a user
		// would configure it: a 429 halves the rate and 2xx answers
		// restore it, instead of a ceiling learned from the first second.
		RateLimit: engine.RateLimit{PerHost: engine.Rate{PerSecond: 2000, Burst: 100}},
	})
	if err != nil {
		fmt.Fprintf(stderr, "courier demo: %v\n", err)
		return exitFailed
	}
	defer e.Close()

	resp, err := e.Post(ctx, "/auth/login", requests.WithoutAuth(),
		requests.WithJSON(map[string]string{"username": "demo", "password": "demo"}))
	if err != nil {
		fmt.Fprintf(stderr, "courier demo: login: %v\n", err)
		return exitFailed
	}
	tk, err := requests.Decode[demo.Tokens](resp)
	if err != nil {
		fmt.Fprintf(stderr, "courier demo: login: %v\n", err)
		return exitFailed
	}
	e.SetTokens(engine.Tokens{AccessToken: tk.AccessToken, RefreshToken: tk.RefreshToken})

	bar := newProgress(fs, showProgress, int64(*n), stderr, "demo")
	var sum summary
	start := time.Now()
	code := exitOK
	for res := range e.Stream(ctx, demoRequests(*n), 0) {
		if res.Err != nil {
			fmt.Fprintf(stderr, "request %d: %v\n", res.Index, res.Err)
		}
		r := describe(lineMeta{start: start}, res)
		code = sum.add(&r, res.Err, code)
		bar.add()
	}
	sum.elapsed = time.Since(start)
	bar.done()
	if err := e.Shutdown(ctx); err != nil {
		fmt.Fprintf(stderr, "courier demo: shutdown: %v\n", err)
	}

	fmt.Fprintln(stdout)
	sum.print(stdout, e.Stats())
	st := api.Stats()
	fmt.Fprintf(stdout, "server saw  %d requests, %d refresh calls, %d rejected tokens, %d flaky answers, %d resets, %d uploads\n",
		st.Requests, st.Refreshes, st.Unauthorized, st.Flaky, st.Resets, st.Uploads)
	return min(code, exitFailed)
}

// demoRequests is a deterministic mix: plain and duplicate reads, pages,
// flaky, resetting and slow endpoints, idempotent creates and uploads.
func demoRequests(n int) func(yield func(*requests.Request) bool) {
	return func(yield func(*requests.Request) bool) {
		rnd := rand.New(rand.NewPCG(1, 2))
		for i := range n {
			var r *requests.Request
			switch k := rnd.IntN(100); {
			case k < 68:
				r = requests.New(http.MethodGet, "/items/"+strconv.Itoa(rnd.IntN(300)))
			case k < 78:
				r = requests.New(http.MethodGet, "/items", requests.WithQuery("page", strconv.Itoa(rnd.IntN(20)+1)))
			case k < 80:
				r = requests.New(http.MethodGet, "/flaky/"+strconv.Itoa(i))
			case k < 85:
				r = requests.New(http.MethodGet, "/reset/"+strconv.Itoa(i))
			case k < 92:
				r = requests.New(http.MethodGet, "/slow/"+strconv.Itoa(i), requests.WithQuery("ms", "40"))
			case k < 99:
				r = requests.New(http.MethodPost, "/items",
					requests.WithJSON(map[string]any{"name": "widget " + strconv.Itoa(i)}),
					requests.WithIdempotencyKey("demo-create-"+strconv.Itoa(i)))
			default:
				r = demoUpload(i)
			}
			if !yield(r) {
				return
			}
		}
	}
}

// demoUpload is a 256 KiB generated file and a field, streamed.
func demoUpload(i int) *requests.Request {
	const size = 256 << 10
	var b upload.Builder
	body, err := b.Field("note", "demo upload "+strconv.Itoa(i)).
		Reader("file", "data-"+strconv.Itoa(i)+".bin", size, "", func() (io.ReadCloser, error) {
			seed := [32]byte{byte(i), byte(i >> 8), byte(i >> 16)}
			return io.NopCloser(io.LimitReader(rand.NewChaCha8(seed), size)), nil
		}).Build()
	r := requests.New(http.MethodPost, "/upload", requests.WithBody(body))
	if err != nil {
		r.Fail(err)
	}
	return r
}

const serveDemoUsage = `Usage: courier serve-demo [--addr HOST:PORT] [flags]

Runs the demo API alone until SIGINT or SIGTERM: log in with
POST /auth/login {"username":"demo","password":"demo"}, refresh with
POST /auth/refresh {"refresh_token":...}; /items, /items/ID, /flaky/ID,
/slow/ID?ms=N, /reset/ID and /upload answer with a Bearer token.

Flags:
`

func runServeDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("serve-demo", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, serveDemoUsage); fs.PrintDefaults() }
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	uses := fs.Int("access-uses", 500, "requests an access token serves before it expires (0: no limit)")
	ttl := fs.Duration("access-ttl", 0, "access token lifetime (0: no limit)")
	flaky := fs.Int("flaky-percent", 20, "share of /flaky ids whose first attempt fails")
	tokenFile := fs.String("token-file", "", "write a logged-in session's tokens here, for courier fetch --token-file")
	if code, done := parseFlags(fs, args, stderr); done {
		return code
	}
	fail := failer(stderr, "serve-demo", true)
	switch {
	case *uses < 0:
		return fail(exitUsage, "--access-uses must be 0 (no limit) or more, got %d", *uses)
	case *ttl < 0:
		return fail(exitUsage, "--access-ttl must be 0 (no limit) or more, got %s", *ttl)
	case *flaky < 0 || *flaky > 100:
		return fail(exitUsage, "--flaky-percent must be between 0 and 100, got %d", *flaky)
	case fs.NArg() > 0:
		return fail(exitUsage, "no arguments are taken, got %q", fs.Args())
	}
	api, err := demo.Start(*addr, demo.Config{AccessUses: *uses, AccessTTL: *ttl, FlakyPercent: *flaky})
	if err != nil {
		return fail(exitUsage, "--addr %s: %v", *addr, err)
	}
	fmt.Fprintf(stdout, "demo API on %s (login: POST /auth/login {\"username\":\"demo\",\"password\":\"demo\"})\n", api.URL)
	if *tokenFile != "" {
		tk := api.Login()
		if err := saveTokens(*tokenFile, engine.Tokens{AccessToken: tk.AccessToken, RefreshToken: tk.RefreshToken}); err != nil {
			fmt.Fprintf(stderr, "courier serve-demo: --token-file: %v\n", err)
			api.Close()
			return exitUsage
		}
		fmt.Fprintf(stdout, "tokens for a new session written to %s\n", *tokenFile)
	}
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := api.Shutdown(shutdownCtx); err != nil {
		fmt.Fprintf(stderr, "courier serve-demo: %v\n", err)
		return exitFailed
	}
	return exitOK
}
