package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/courier-go/courier/engine"
)

// tokenSaveRetry is how often a failed save of rotated tokens is tried
// again while the batch runs.
const tokenSaveRetry = time.Second

// tokenSaver writes rotated tokens to --token-file. The server has
// usually retired the old refresh token by then, so a failed save is loud:
// an error on stderr naming the file, tried again every tokenSaveRetry
// while the batch runs and once more at its end (the latest tokens win),
// and, if the file still does not hold them, a failing exit status.
// tokenSaver is safe for concurrent use; a nil *tokenSaver saves nothing.
type tokenSaver struct {
	path   string
	stderr io.Writer

	mu      sync.Mutex     // protects the fields below, and serializes saves
	pending *engine.Tokens // the latest tokens not yet in the file
	lastErr string         // the last failure reported, so each is said once
	stop    chan struct{}  // stops the retry goroutine; nil until a save fails
	done    chan struct{}  // closed when the retry goroutine has returned
}

func newTokenSaver(path string, stderr io.Writer) *tokenSaver {
	return &tokenSaver{path: path, stderr: stderr}
}

// save is the engine's OnTokenRefreshed: it stores t now, or keeps it for
// the retries.
func (s *tokenSaver) save(t engine.Tokens) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = &t
	s.flushLocked()
	if s.pending != nil && s.stop == nil {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.retry(s.stop, s.done)
	}
}

func (s *tokenSaver) retry(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(tokenSaveRetry)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.mu.Lock()
			s.flushLocked()
			s.mu.Unlock()
		case <-stop:
			return
		}
	}
}

// flushLocked writes the pending tokens, if any, and reports a failure
// once per distinct error.
func (s *tokenSaver) flushLocked() {
	if s.pending == nil {
		return
	}
	if err := saveTokens(s.path, *s.pending); err != nil {
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			fmt.Fprintf(s.stderr, "courier fetch: saving rotated tokens to --token-file %s: %v (retrying while the batch runs)\n", s.path, err)
		}
		return
	}
	s.pending = nil
	if s.lastErr != "" {
		s.lastErr = ""
		fmt.Fprintf(s.stderr, "courier fetch: rotated tokens saved to --token-file %s\n", s.path)
	}
}

// finish runs once the engine is closed (no more refreshes): it stops the
// retries, tries a last time, and returns the exit status, which becomes
// exitFailed when the file does not hold the latest tokens (a status
// above it, such as session expired or a signal, is kept).
func (s *tokenSaver) finish(code int) int {
	if s == nil {
		return code
	}
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
	if s.pending == nil {
		return code
	}
	fmt.Fprintf(s.stderr, "courier fetch: the latest tokens are NOT saved in --token-file %s (%s); the refresh token it holds may no longer work\n", s.path, s.lastErr)
	return max(code, exitFailed)
}

// saveTokens replaces path atomically, readable by its owner only.
func saveTokens(path string, t engine.Tokens) error {
	b, err := json.Marshal(tokenFile{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".courier-tokens-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
