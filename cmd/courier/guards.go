package main

import (
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/courier-go/courier/errors"
	"github.com/courier-go/courier/internal/redact"
)

// What a hostile input file must not make fetch do: send the token outside
// the base URL's path, or upload a file from outside --upload-root, or the
// token file. Each refusal is an error on its own line; the batch goes on.

// lineParser turns input lines into requests, refusing those that must not
// run. The zero value checks nothing; fetch uses newLineParser. It is safe
// for concurrent use.
type lineParser struct {
	base    *url.URL     // the base URL; nil: paths are not checked
	uploads *uploadGuard // nil: files are used as given
}

func newLineParser(baseURL string, uploads *uploadGuard) (*lineParser, error) {
	if err := checkBaseURL(baseURL); err != nil {
		return nil, err
	}
	u, _ := url.Parse(baseURL)
	return &lineParser{base: u, uploads: uploads}, nil
}

// checkBaseURL refuses a --base-url that is not an absolute http or https
// URL with a host. Its query and user info may hold a key: the message
// shows the URL without them.
func checkBaseURL(baseURL string) error {
	u, err := url.Parse(baseURL)
	shown := redact.RawURL(baseURL)
	switch {
	case baseURL == "":
		return fmt.Errorf("--base-url is required")
	case err != nil:
		return fmt.Errorf("--base-url %q: not a URL: %v", shown, urlErr(err))
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("--base-url %q: want an http:// or https:// URL", shown)
	case u.Host == "":
		return fmt.Errorf("--base-url %q: no host", shown)
	}
	return nil
}

// urlErr is url.Parse's error without the URL it quotes whole, query and
// all.
func urlErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// checkPath refuses a path (or a URL on the base URL's origin) that would
// leave the base URL's path once a server resolves its dot segments, in
// any spelling: "..", "%2e%2e", "%2E.", with "/", "%2f" or "\" between.
// The token goes with every request to the base URL's origin, so it must
// never reach a path outside the base URL's.
func (p *lineParser) checkPath(path string) error {
	if p.base == nil {
		return nil
	}
	rest := path
	if !strings.HasPrefix(path, "/") {
		u, err := url.Parse(path)
		if err != nil || !sameOrigin(u, p.base) {
			return nil // another origin gets no token; a bad URL fails later
		}
		basePath := strings.TrimSuffix(p.base.EscapedPath(), "/")
		rest = u.EscapedPath()
		if rest != basePath && !strings.HasPrefix(rest, basePath+"/") {
			return fmt.Errorf("URL %q is outside the base URL's path %q", path, p.base.Path)
		}
		rest = rest[len(basePath):]
	}
	if leavesBase(rest) {
		return fmt.Errorf("path %q climbs outside the base URL's path %q", path, p.base.Path)
	}
	return nil
}

// leavesBase reports whether the dot segments of path (a path relative to
// the base URL's, without scheme and host) climb above its start, after
// percent-decoding.
func leavesBase(path string) bool {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	if dec, err := url.PathUnescape(path); err == nil {
		path = dec
	}
	depth := 0
	for _, seg := range strings.FieldsFunc(path, func(r rune) bool { return r == '/' || r == '\\' }) {
		switch seg {
		case ".":
		case "..":
			if depth--; depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

func sameOrigin(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if strings.EqualFold(u.Scheme, "https") {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

// uploadGuard decides which files input lines may upload: regular files
// under the upload root, symlinks resolved, never the token file. It is
// safe for concurrent use (it holds no state that changes).
type uploadGuard struct {
	root      string      // absolute, symlinks resolved
	tokenFile string      // --token-file, or ""
	tokenAt   os.FileInfo // the token file when fetch started, or nil
}

// newUploadGuard checks --upload-root ("" is the current directory).
func newUploadGuard(root, tokenFile string) (*uploadGuard, error) {
	if root == "" {
		root = "."
	}
	abs, err := filepath.Abs(root)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return nil, fmt.Errorf("--upload-root %q: %v", root, unwrapPathError(err))
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--upload-root %q: not a directory", root)
	}
	g := &uploadGuard{root: abs, tokenFile: tokenFile}
	if tokenFile != "" {
		g.tokenAt, _ = os.Stat(tokenFile)
	}
	return g, nil
}

// resolve returns the file to upload for path (relative paths are taken
// from the root), or why it may not be uploaded.
func (g *uploadGuard) resolve(path string) (string, error) {
	abs := path
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(g.root, abs)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("upload: file %q: %v", path, unwrapPathError(err))
	}
	if rel, err := filepath.Rel(g.root, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("upload: file %q is outside --upload-root %s", path, g.root)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("upload: file %q: %v", path, unwrapPathError(err))
	}
	if !st.Mode().IsRegular() {
		// Never opened: opening a FIFO would wait for a writer.
		return "", fmt.Errorf("upload: file %q: not a regular file", path)
	}
	if g.isTokenFile(st) {
		return "", fmt.Errorf("upload: file %q is the --token-file: tokens are never uploaded", path)
	}
	return real, nil
}

// isTokenFile compares st with the token file as it is now (saves replace
// it) and as it was when fetch started (a hard link to it keeps that one).
func (g *uploadGuard) isTokenFile(st os.FileInfo) bool {
	if g.tokenFile == "" {
		return false
	}
	if g.tokenAt != nil && os.SameFile(st, g.tokenAt) {
		return true
	}
	now, err := os.Stat(g.tokenFile)
	return err == nil && os.SameFile(st, now)
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// checkOut refuses an --out file that is one of fetch's inputs: creating it
// would empty the input (named as FILE, or given on stdin) or the token
// file before anything was read. Symlinks and hard links are seen through.
func checkOut(out, inPath string, stdin io.Reader, tokenFile string) error {
	if out == "" {
		return nil
	}
	st, err := os.Stat(out)
	if err != nil {
		return nil // not there yet: nothing to empty
	}
	same := func(path string) bool {
		other, err := os.Stat(path)
		return err == nil && os.SameFile(st, other)
	}
	switch {
	case inPath != "" && inPath != "-" && same(inPath):
		return fmt.Errorf("--out %q is the input file %q: it would be emptied before it is read", out, inPath)
	case tokenFile != "" && same(tokenFile):
		return fmt.Errorf("--out %q is the --token-file", out)
	}
	if f, ok := stdin.(*os.File); ok && (inPath == "" || inPath == "-") {
		if in, err := f.Stat(); err == nil && in.Mode().IsRegular() && os.SameFile(st, in) {
			return fmt.Errorf("--out %q is the file on stdin: it would be emptied before it is read", out)
		}
	}
	return nil
}

// Bounds of fetch's numeric flags.
const (
	maxConcurrency = 4096    // more workers only add memory (each may hold --max-body)
	maxQueue       = 1 << 20 // a queue entry is a request held in memory
	minRate        = 0.001   // one request per 1000 s; below, waits are endless
)

// checkNumbers checks the numeric flags, naming the flag at fault.
func (o *fetchOptions) checkNumbers() error {
	switch {
	case o.concurrency < 1:
		return fmt.Errorf("--concurrency must be at least 1, got %d", o.concurrency)
	case o.concurrency > maxConcurrency:
		return fmt.Errorf("--concurrency must be at most %d, got %d", maxConcurrency, o.concurrency)
	case o.queue < 0 || o.queue > maxQueue:
		return fmt.Errorf("--queue must be between 0 (the default) and %d, got %d", maxQueue, o.queue)
	case math.IsNaN(o.rate) || math.IsInf(o.rate, 0) || o.rate < 0:
		return fmt.Errorf("--rate must be a number of requests per second, 0 for unlimited, got %v", o.rate)
	case o.rate > 0 && o.rate < minRate:
		return fmt.Errorf("--rate %g is below the minimum %g (one request per %g s); 0 means unlimited", o.rate, minRate, 1/minRate)
	case o.burst < 0:
		return fmt.Errorf("--burst must be at least 0, got %d", o.burst)
	}
	return nil
}
