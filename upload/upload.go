package upload

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// Builder collects the parts of a multipart body. The zero value is ready
// to use. A Builder is not safe for concurrent use; the [Body] it builds is.
type Builder struct {
	parts    []source
	progress func(sent, total int64)
	boundary string
}

// source is one part as the caller described it.
type source struct {
	field, filename, contentType string
	value                        []byte // a plain field
	path                         string // a file by path
	open                         func() (io.ReadCloser, error)
	size                         int64
	isFile                       bool
}

// Field adds a plain form field.
func (b *Builder) Field(name, value string) *Builder {
	b.parts = append(b.parts, source{field: name, value: []byte(value)})
	return b
}

// File adds the files at paths under field, one part each, in order.
func (b *Builder) File(field string, paths ...string) *Builder {
	for _, p := range paths {
		b.parts = append(b.parts, source{field: field, filename: filepath.Base(p), path: p, isFile: true})
	}
	return b
}

// Reader adds a file part whose bytes come from open, called once per
// attempt. size is the exact length, or -1 when unknown (the body is then
// sent chunked). contentType may be empty to detect it from filename.
func (b *Builder) Reader(field, filename string, size int64, contentType string, open func() (io.ReadCloser, error)) *Builder {
	b.parts = append(b.parts, source{field: field, filename: filename, open: open, size: size, contentType: contentType, isFile: true})
	return b
}

// Progress sets a callback that receives the bytes of the body sent so far
// in the current attempt and the total (-1 when unknown). It is called from
// the goroutine that sends the body; a retry starts again from 0. Once a
// new attempt has opened the body, late reads of an earlier one (the
// transport may go on sending a body the server has already answered) are
// not reported, so the numbers never jump between attempts.
func (b *Builder) Progress(fn func(sent, total int64)) *Builder {
	b.progress = fn
	return b
}

// Boundary sets the multipart boundary; by default a random one is used.
func (b *Builder) Boundary(s string) *Builder {
	b.boundary = s
	return b
}

// Body is a built multipart body; it implements requests.Body. Body is safe
// for concurrent use.
type Body struct {
	parts       []part
	trailer     []byte
	size        int64 // -1 when a part's size is unknown
	contentType string
	progress    func(sent, total int64)
	progressMu  sync.Mutex // serializes progress calls across attempts
	// opens numbers the readers Open returns. Only the newest reports
	// progress: the transport may still be reading an earlier attempt's
	// body after that attempt has been answered, and its progress would
	// interleave with the new attempt's.
	opens atomic.Int64
}

// part is one framed part: its header bytes and its content.
type part struct {
	header []byte
	value  []byte // plain field, or nil
	path   string
	open   func() (io.ReadCloser, error)
	size   int64
	name   string // for errors: the file's path or name
}

// Build checks every file (it must exist, be a regular file and be
// readable) and frames the parts. The error names each file that is wrong.
func (b *Builder) Build() (*Body, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if b.boundary != "" {
		if err := mw.SetBoundary(b.boundary); err != nil {
			return nil, fmt.Errorf("upload: boundary %q: %w", b.boundary, err)
		}
	}
	body := &Body{contentType: mw.FormDataContentType(), progress: b.progress}
	var problems []error
	var total int64
	for _, s := range b.parts {
		p := part{value: s.value, open: s.open, size: s.size, path: s.path, name: s.filename}
		ctype := s.contentType
		if s.path != "" {
			p.name = s.path
			size, sniffed, err := inspect(s.path)
			if err != nil {
				problems = append(problems, err)
				continue
			}
			p.size = size
			if ctype == "" {
				ctype = typeOf(s.filename, sniffed)
			}
		} else if s.isFile && ctype == "" {
			ctype = typeOf(s.filename, nil)
		}
		h := textproto.MIMEHeader{}
		if s.isFile {
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="%s"; filename="%s"`, escapeQuotes(s.field), escapeQuotes(s.filename)))
			h.Set("Content-Type", ctype)
		} else {
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="%s"`, escapeQuotes(s.field)))
			p.size = int64(len(s.value))
		}
		if _, err := mw.CreatePart(h); err != nil {
			return nil, fmt.Errorf("upload: part %q: %w", s.field, err)
		}
		p.header = bytes.Clone(buf.Bytes())
		buf.Reset()
		if p.size < 0 || total < 0 {
			total = -1
		} else {
			total += int64(len(p.header)) + p.size
		}
		body.parts = append(body.parts, p)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	body.trailer = bytes.Clone(buf.Bytes())
	if total >= 0 {
		total += int64(len(body.trailer))
	}
	body.size = total
	return body, nil
}

// inspect checks that path is a readable regular file and returns its size
// and first bytes.
func inspect(path string) (int64, []byte, error) {
	// Stat before opening: opening a FIFO waits for a writer, maybe
	// forever.
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return 0, nil, fmt.Errorf("upload: file %q: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, fmt.Errorf("upload: file %q: %w", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, nil, fmt.Errorf("upload: file %q: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return 0, nil, fmt.Errorf("upload: file %q: not a regular file", path)
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return 0, nil, fmt.Errorf("upload: file %q: %w", path, err)
	}
	return st.Size(), head[:n], nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// typeOf picks a part's content type from its name, else its first bytes.
func typeOf(name string, head []byte) string {
	if t := mime.TypeByExtension(filepath.Ext(name)); t != "" {
		return t
	}
	if len(head) > 0 {
		return http.DetectContentType(head)
	}
	return "application/octet-stream"
}

var quoteEscaper = strings.NewReplacer("\\", "\\\\", `"`, "\\\"", "\r", "%0D", "\n", "%0A")

func escapeQuotes(s string) string { return quoteEscaper.Replace(s) }

// ContentType returns multipart/form-data with the body's boundary.
func (b *Body) ContentType() string { return b.contentType }

// Size returns the exact length of the body, or -1 when a part's size is
// unknown.
func (b *Body) Size() int64 { return b.size }

// Open returns a reader of the whole body from byte 0. Files are opened one
// at a time, as the reader reaches them, and closed when read or when the
// reader is closed.
func (b *Body) Open() (io.ReadCloser, error) {
	return &reader{b: b, num: b.opens.Add(1)}, nil
}

// reader streams one attempt of a Body. It is used by one goroutine at a
// time (the transport's), and Close may come from another, so it locks.
type reader struct {
	b      *Body
	num    int64      // which Open made it
	mu     sync.Mutex // protects the fields below
	i      int        // part index; len(parts) means the trailer
	stage  int        // 0 header, 1 content, 2 done with part
	off    int        // offset in the header, value or trailer
	cur    io.ReadCloser
	got    int64 // content bytes read from cur
	sent   int64
	closed bool
}

func (r *reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errors.New("upload: body closed")
	}
	n, err := r.read(p)
	if n > 0 {
		r.sent += int64(n)
		if fn := r.b.progress; fn != nil {
			r.b.progressMu.Lock()
			if r.num == r.b.opens.Load() {
				fn(r.sent, r.b.size)
			}
			r.b.progressMu.Unlock()
		}
	}
	return n, err
}

func (r *reader) read(p []byte) (int, error) {
	for {
		if r.i == len(r.b.parts) {
			if r.off == len(r.b.trailer) {
				return 0, io.EOF
			}
			n := copy(p, r.b.trailer[r.off:])
			r.off += n
			return n, nil
		}
		pt := &r.b.parts[r.i]
		switch r.stage {
		case 0:
			if r.off < len(pt.header) {
				n := copy(p, pt.header[r.off:])
				r.off += n
				return n, nil
			}
			r.stage, r.off = 1, 0
		case 1:
			if pt.value != nil || (pt.path == "" && pt.open == nil) {
				if r.off < len(pt.value) {
					n := copy(p, pt.value[r.off:])
					r.off += n
					return n, nil
				}
				r.stage, r.off = 2, 0
				continue
			}
			if r.cur == nil {
				rc, err := pt.openContent()
				if err != nil {
					return 0, err
				}
				r.cur, r.got = rc, 0
			}
			n, err := r.cur.Read(p)
			r.got += int64(n)
			if pt.size >= 0 && r.got > pt.size {
				return 0, fmt.Errorf("upload: %q grew while being sent (more than %d bytes)", pt.name, pt.size)
			}
			if err == io.EOF {
				r.cur.Close()
				r.cur = nil
				if pt.size >= 0 && r.got != pt.size {
					return n, fmt.Errorf("upload: %q shrank while being sent (%d of %d bytes)", pt.name, r.got, pt.size)
				}
				r.stage = 2
				if n > 0 {
					return n, nil
				}
				continue
			}
			if err != nil {
				return n, fmt.Errorf("upload: reading %q: %w", pt.name, err)
			}
			return n, nil
		case 2:
			r.i, r.stage, r.off = r.i+1, 0, 0
		}
	}
}

func (p *part) openContent() (io.ReadCloser, error) {
	if p.path != "" {
		f, err := os.Open(p.path)
		if err != nil {
			return nil, fmt.Errorf("upload: file %q: %w", p.path, unwrapPath(err))
		}
		return f, nil
	}
	rc, err := p.open()
	if err != nil {
		return nil, fmt.Errorf("upload: opening %q: %w", p.name, err)
	}
	return rc, nil
}

// Close closes the file being read, if any.
func (r *reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.cur != nil {
		err := r.cur.Close()
		r.cur = nil
		return err
	}
	return nil
}
