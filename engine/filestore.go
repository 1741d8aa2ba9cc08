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
// file holds either the old tokens or the new ones, never a mix. The
// refresh lock is an advisory lock (flock) on a sibling file, the path
// with ".lock" appended, held only while a refresh runs or a write is
// made; the kernel releases it when its process dies, so its lease never
// lapses. A file store cannot notify: Watch returns nil, and engines poll.
//
// The file is
//
//	{"access_token":"…","refresh_token":"…","expiry":"2006-01-02T15:04:05Z","generation":7}
//
// A file without "generation" (one written by hand, or by an older
// courier) holding a token is generation 1; a missing file is the empty
// store. The directory must exist.
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
		return StoredTokens{}, fmt.Errorf("token file: %w", err)
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
	if ft.Expiry != nil {
		v.Expiry = *ft.Expiry
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
	lf, err := os.OpenFile(f.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("token file lock: %w", err)
	}
	if err := flockWait(ctx, lf); err != nil {
		lf.Close()
		return nil, err
	}
	return &fileLock{f: f, lf: lf}, nil
}

// Watch returns nil: a file cannot announce its writes. Engines poll.
func (f *FileStore) Watch(context.Context) <-chan uint64 { return nil }

// fileLock is a held flock. One goroutine uses it at a time.
type fileLock struct {
	f  *FileStore
	lf *os.File // the locked file; nil once released
}

func (l *fileLock) Renew(ctx context.Context, _ time.Duration) error {
	if l.lf == nil {
		return ErrLockLost
	}
	return ctx.Err()
}

func (l *fileLock) Commit(ctx context.Context, gen uint64, t Tokens) (StoredTokens, bool, error) {
	if l.lf == nil {
		return StoredTokens{}, false, ErrLockLost
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
	if err := l.f.write(next); err != nil {
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

// write replaces the file with v durably: temporary file, fsync, rename,
// fsync of the directory. The caller holds the lock.
func (f *FileStore) write(v StoredTokens) (err error) {
	ft := fileTokens{AccessToken: v.AccessToken, RefreshToken: v.RefreshToken, Generation: &v.Generation}
	if !v.Expiry.IsZero() {
		exp := v.Expiry.UTC().Round(0)
		ft.Expiry = &exp
	}
	b, err := json.Marshal(ft)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if _, err = tmp.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if err = os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	// The rename is durable once the directory is.
	return syncDir(dir)
}
