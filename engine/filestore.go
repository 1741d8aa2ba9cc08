package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/courier-go/courier/errors"
)

// FileStore is a [TokenStore] in a JSON file, shared by every process on
// the machine that opens the same path: together they make exactly one
// refresh per expiry and never send a refresh token another has rotated
// away.
//
// Each write replaces the file whole: a temporary file in the same
// directory, mode 0600, is written and flushed to disk (fsync), renamed
// over the file, and the directory is flushed too, so after a crash the
// file holds either the old tokens or the new ones, never a mix. When the
// path is a symbolic link (or a chain of them, or one whose target does
// not exist yet), the file is its target: the temporary file is written
// beside the target and renamed onto it, so the link stays a link and a
// process that opens the target's own path shares the session. The
// refresh lock is an advisory lock (flock) on a sibling of the target, its
// path with ".lock" appended, held only while a refresh runs or a write
// is made; the kernel releases it when its process dies, so its lease
// never lapses. A file store cannot notify: Watch returns nil, and
// engines poll.
//
// Before a refresh, its lock proves that the target's directory takes a
// new file ([WriteChecker]): a refresh whose answer could not be written
// would lose the rotated token.
//
// The file is
//
//	{"access_token":"…","refresh_token":"…","expiry":"2006-01-02T15:04:05Z","generation":7}
//
// A file without "generation" (one written by hand, or by an older
// courier) holding a token is generation 1; a missing file is the empty
// store. The directory must exist. A file written by another tool may
// give the expiry as "expires_at" instead, an RFC 3339 time or Unix
// seconds; "expiry" wins when both are there, and writes use "expiry".
//
// FileStore needs flock: it works on Linux, macOS and the BSDs;
// elsewhere NewFileStore returns an error. A FileStore is safe for
// concurrent use, and so are several FileStores on one path. The zero
// value has no file and is not usable; call [NewFileStore].
type FileStore struct {
	path string // the token file; immutable
}

// NewFileStore returns a store kept in the file at path. It reads
// nothing yet; the file need not exist.
func NewFileStore(path string) (*FileStore, error) {
	if path == "" {
		return nil, fmt.Errorf("file store: empty path")
	}
	if !flockSupported {
		return nil, fmt.Errorf("file store %s: %w: needs flock, which this platform lacks", path, errors.ErrUnsupported)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("file store %s: %w", path, err)
	}
	return &FileStore{path: abs}, nil
}

// Path returns the token file's absolute path.
func (f *FileStore) Path() string { return f.path }

// fileTokens is the file's JSON form.
type fileTokens struct {
	AccessToken  string     `json:"access_token"`
	RefreshToken string     `json:"refresh_token"`
	Expiry       *time.Time `json:"expiry,omitempty"`
	Generation   *uint64    `json:"generation,omitempty"`
	// ExpiresAt is read, never written: other tools' name for Expiry.
	ExpiresAt json.RawMessage `json:"expires_at,omitempty"`
}

// expiresAt reads an "expires_at" value: an RFC 3339 string, or a number
// of Unix seconds.
func expiresAt(raw json.RawMessage) (time.Time, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		t, err := time.Parse(time.RFC3339, s)
		return t, err == nil
	}
	var secs float64
	if json.Unmarshal(raw, &secs) == nil && secs > 0 && secs < 1<<40 {
		return time.Unix(int64(secs), 0).UTC(), true
	}
	return time.Time{}, false
}

// Load reads the file. A missing file is the empty store; a file that is
// not a token file is an error naming the file, never its content.
func (f *FileStore) Load(ctx context.Context) (StoredTokens, error) {
	if err := ctx.Err(); err != nil {
		return StoredTokens{}, err
	}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return StoredTokens{}, nil
	}
	if err != nil {
		return StoredTokens{}, fmt.Errorf("token file %s: %w", f.path, err)
	}
	var ft fileTokens
	if err := json.Unmarshal(b, &ft); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return StoredTokens{}, fmt.Errorf("token file %s: not JSON (at byte %d)", f.path, se.Offset)
		}
		return StoredTokens{}, fmt.Errorf("token file %s: want a JSON object with access_token and refresh_token strings", f.path)
	}
	v := StoredTokens{Tokens: Tokens{AccessToken: ft.AccessToken, RefreshToken: ft.RefreshToken}}
	switch {
	case ft.Expiry != nil:
		v.Expiry = *ft.Expiry
	case len(ft.ExpiresAt) > 0 && string(ft.ExpiresAt) != "null":
		exp, ok := expiresAt(ft.ExpiresAt)
		if !ok {
			return StoredTokens{}, fmt.Errorf("token file %s: expires_at: want an RFC 3339 time or Unix seconds", f.path)
		}
		v.Expiry = exp
	}
	switch {
	case ft.Generation != nil:
		v.Generation = *ft.Generation
	case v.AccessToken != "" || v.RefreshToken != "":
		v.Generation = 1
	}
	if v.Generation == 0 && (v.AccessToken != "" || v.RefreshToken != "") {
		return StoredTokens{}, fmt.Errorf("token file %s: generation 0 holds tokens", f.path)
	}
	return v, nil
}

// CompareAndSwap implements [TokenStore]. It takes the lock for the
// write, so it waits while another process refreshes.
func (f *FileStore) CompareAndSwap(ctx context.Context, gen uint64, t Tokens) (StoredTokens, bool, error) {
	l, err := f.lock(ctx)
	if err != nil {
		return StoredTokens{}, false, err
	}
	return l.Commit(ctx, gen, t)
}

// Lock implements [TokenStore]. The lock is an flock on the sibling
// ".lock" file; lease is ignored, since the kernel releases the lock when
// its process dies. Waiting polls, with a short jittered pause, until the
// lock is free or ctx ends.
func (f *FileStore) Lock(ctx context.Context, _ time.Duration) (TokenLock, error) {
	return f.lock(ctx)
}

func (f *FileStore) lock(ctx context.Context) (*fileLock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	target, err := f.target()
	if err != nil {
		return nil, err
	}
	name := target + ".lock"
	lf, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said below
		}
		return nil, fmt.Errorf("token file lock %s (in directory %s): %w", name, filepath.Dir(name), err)
	}
	if err := flockWait(ctx, lf); err != nil {
		lf.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("token file lock %s: held by another process: %w", name, err)
		}
		return nil, err
	}
	return &fileLock{f: f, lf: lf, target: target}, nil
}

// maxLinks bounds a chain of symbolic links, as the kernel does.
const maxLinks = 40

// target returns the file the store's path names, as an absolute path:
// every symbolic link resolved, including a last one whose target does
// not exist yet (the first write creates it there).
func (f *FileStore) target() (string, error) {
	p := f.path
	for range maxLinks {
		// The directories first, so that a relative link is read from
		// where the kernel would read it.
		dir, err := filepath.EvalSymlinks(filepath.Dir(p))
		if errors.Is(err, fs.ErrNotExist) {
			return p, nil // the write fails there, naming the directory
		}
		if err != nil {
			return "", fmt.Errorf("token file %s: %w", f.path, err)
		}
		p = filepath.Join(dir, filepath.Base(p))
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return p, nil
		case err != nil:
			return "", fmt.Errorf("token file %s: %w", f.path, err)
		case fi.Mode()&fs.ModeSymlink == 0:
			return p, nil
		}
		dest, err := os.Readlink(p)
		if err != nil {
			return "", fmt.Errorf("token file %s: %w", f.path, err)
		}
		if !filepath.IsAbs(dest) {
			dest = filepath.Join(dir, dest)
		}
		p = dest
	}
	return "", fmt.Errorf("token file %s: more than %d symbolic links", f.path, maxLinks)
}

// LockPath returns the path of the lock file: the token file's target
// (links resolved as they are now) with ".lock" appended.
func (f *FileStore) LockPath() string {
	target, err := f.target()
	if err != nil {
		target = f.path
	}
	return target + ".lock"
}

// Watch returns nil: a file cannot announce its writes. Engines poll.
func (f *FileStore) Watch(context.Context) <-chan uint64 { return nil }

// fileLock is a held flock. One goroutine uses it at a time.
type fileLock struct {
	f      *FileStore
	lf     *os.File // the locked file; nil once released
	target string   // the token file the lock is beside, links resolved
}

// CheckWrite implements [WriteChecker]: it creates and removes a
// temporary file in the token file's directory, as a write would, and
// names the directory when it cannot.
func (l *fileLock) CheckWrite(ctx context.Context) error {
	if l.lf == nil {
		return errors.ErrLockLost
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(l.target)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(l.target)+".tmp-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("token file %s: cannot write in its directory %s: %w", l.f.path, dir, err)
	}
	name := tmp.Name()
	cerr := tmp.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("token file %s: cannot remove a file in its directory %s: %w", l.f.path, dir, err)
	}
	if cerr != nil {
		return fmt.Errorf("token file %s: writing in its directory %s: %w", l.f.path, dir, cerr)
	}
	return nil
}

func (l *fileLock) Renew(ctx context.Context, _ time.Duration) error {
	if l.lf == nil {
		return errors.ErrLockLost
	}
	return ctx.Err()
}

func (l *fileLock) Commit(ctx context.Context, gen uint64, t Tokens) (StoredTokens, bool, error) {
	if l.lf == nil {
		return StoredTokens{}, false, errors.ErrLockLost
	}
	defer l.Unlock(ctx)
	if err := ctx.Err(); err != nil {
		return StoredTokens{}, false, err
	}
	cur, err := l.f.Load(ctx)
	if err != nil {
		return StoredTokens{}, false, err
	}
	if cur.Generation != gen {
		return cur, false, nil
	}
	next := StoredTokens{Tokens: Tokens{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, Expiry: t.Expiry}, Generation: gen + 1}
	if err := l.f.write(l.target, next); err != nil {
		return StoredTokens{}, false, err
	}
	return next, true, nil
}

func (l *fileLock) Unlock(context.Context) error {
	if l.lf == nil {
		return nil
	}
	err := l.lf.Close() // closing the last descriptor releases the flock
	l.lf = nil
	if err != nil {
		return fmt.Errorf("token file lock: %w", err)
	}
	return nil
}

// write replaces target, the token file with its links resolved, with v
// durably: temporary file beside it, fsync, rename, fsync of the
// directory. The caller holds the lock.
func (f *FileStore) write(target string, v StoredTokens) (err error) {
	ft := fileTokens{AccessToken: v.AccessToken, RefreshToken: v.RefreshToken, Generation: &v.Generation}
	if !v.Expiry.IsZero() {
		exp := v.Expiry.UTC().Round(0)
		ft.Expiry = &exp
	}
	b, err := json.Marshal(ft)
	if err != nil {
		return fmt.Errorf("token file %s: %w", f.path, err)
	}
	dir := filepath.Dir(target)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return fmt.Errorf("token file %s: %w", f.path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("token file %s: %w", f.path, err)
	}
	if _, err = tmp.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("token file %s: %w", f.path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("token file %s: %w", f.path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("token file %s: %w", f.path, err)
	}
	if err = os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("token file %s: %w", f.path, err)
	}
	// The rename is durable once the directory is.
	return syncDir(dir)
}
