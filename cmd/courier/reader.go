package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/courier-go/courier/requests"
)

// lineReader splits input into lines of at most max bytes (the line end not
// counted). A longer line is reported as too long, its bytes are skipped
// rather than kept, and reading goes on with the next line, so one
// oversized line neither ends the batch nor costs more than max bytes.
type lineReader struct {
	r   *bufio.Reader
	max int
	buf []byte // the line being read; reused
	eof bool
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its "\n" (nor a "\r" before it, as
// bufio.ScanLines), or tooLong (and no bytes) when the line is over the
// limit. After the last line it returns io.EOF.
// The bytes are valid until the next call.
func (l *lineReader) next() (line []byte, tooLong bool, err error) {
	if l.eof {
		return nil, false, io.EOF
	}
	if cap(l.buf) > 1<<20 {
		l.buf = nil // do not keep a huge line's buffer for the small ones
	}
	l.buf = l.buf[:0]
	for {
		chunk, err := l.r.ReadSlice('\n')
		ended := err == nil // chunk ends with "\n"
		content := chunk
		if ended {
			content = chunk[:len(chunk)-1]
		}
		if !tooLong {
			if len(l.buf)+len(content) > l.max {
				tooLong, l.buf = true, l.buf[:0]
			} else {
				l.buf = append(l.buf, content...)
			}
		}
		switch {
		case ended:
			return dropCR(l.buf), tooLong, nil
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			l.eof = true
			if len(l.buf) == 0 && !tooLong && len(chunk) == 0 {
				return nil, false, io.EOF
			}
			return dropCR(l.buf), tooLong, nil // a last line without "\n"
		default:
			return nil, false, err
		}
	}
}

// buffered reports whether next would return without reading: the next
// line is in the buffer whole, or the input is at its end.
func (l *lineReader) buffered() bool {
	if l.eof {
		return true
	}
	b, _ := l.r.Peek(l.r.Buffered()) // never reads
	return bytes.IndexByte(b, '\n') >= 0
}

func dropCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// rawLine is one line of input as read, before parsing.
type rawLine struct {
	n    int    // 1-based line number
	text string // without the line end
	err  error  // the line cannot be read (it is too long); text is empty
}

// Bounds of a batch of lines sent at once.
const (
	maxBatchLines = 256
	maxBatchBytes = 64 << 10 // the bytes of its lines' text; one longer line goes alone
)

// input reads fetch's input on a goroutine of its own, which it
// owns: Stop ends that goroutine even while a read blocks (a quiet pipe, a
// terminal, a FIFO), so a signal stops the batch in every state.
//
// Lines go out in batches: the goroutine sends what it has read as soon
// as the next line is not in its buffer yet (a read could wait), so a line
// never waits for the next, and a file read in large chunks costs one
// handoff per batch rather than per line.
//
// The protocol between Stop and the goroutine: the goroutine opens its
// source, then, holding mu, either sees stop closed (and returns) or
// publishes the source in src; Stop, holding mu, closes stop and reads src.
// So either the goroutine returns by itself or Stop knows the source whose
// pending read it must interrupt.
type input struct {
	lines chan []rawLine // unbuffered; every line, in order, in batches; closed after the last
	stop  chan struct{}  // closed by Stop
	done  chan struct{}  // closed as the goroutine returns, just before lines
	err   error          // why reading ended early; written by the goroutine before done
	p     *lineParser    // parses lines for parse; safe for concurrent use

	mu  sync.Mutex // protects src and the closing of stop
	src io.Reader  // the open source, once the goroutine has it
}

// newInput starts reading lines from the source open returns; the
// goroutine closes it at the end. maxLine is the longest line accepted; p
// parses the lines read.
func newInput(open func() (io.ReadCloser, error), maxLine int, p *lineParser) *input {
	in := &input{lines: make(chan []rawLine), stop: make(chan struct{}), done: make(chan struct{}), p: p}
	go in.run(open, maxLine)
	return in
}

func (in *input) run(open func() (io.ReadCloser, error), maxLine int) {
	defer func() {
		// done before lines: whoever has seen lines closed finds err
		// written and done closed, so Err returns it even after Stop.
		close(in.done)
		close(in.lines)
	}()
	src, err := open()
	if err != nil {
		in.err = fmt.Errorf("input: %w", err)
		return
	}
	defer src.Close()
	in.mu.Lock()
	select {
	case <-in.stop:
		in.mu.Unlock()
		return
	default:
		in.src = src
	}
	in.mu.Unlock()

	lr := newLineReader(src, maxLine)
	var (
		batch []rawLine // read, not sent yet
		size  int       // the bytes of batch's text
	)
	send := func() bool {
		if len(batch) == 0 {
			return true
		}
		select {
		case in.lines <- batch:
			batch, size = nil, 0 // the receiver owns it now
			return true
		case <-in.stop:
			return false
		}
	}
	for n := 1; ; n++ {
		text, tooLong, err := lr.next()
		if err == io.EOF {
			send()
			return
		}
		if err != nil {
			select {
			case <-in.stop: // Stop interrupted the read
			default:
				in.err = fmt.Errorf("reading input after line %d: %w", n-1, err)
				send() // the lines before it are answered
			}
			return
		}
		line := rawLine{n: n, text: string(text)}
		if tooLong {
			line.err = fmt.Errorf("longer than --max-line (%s)", byteSize(maxLine))
		}
		if batch == nil {
			batch = make([]rawLine, 0, 16)
		}
		batch, size = append(batch, line), size+len(line.text)
		if len(batch) < maxBatchLines && size < maxBatchBytes && lr.buffered() {
			continue
		}
		if !send() {
			return
		}
	}
}

// Stop ends the reading goroutine and waits for it. A read or an open that
// cannot be interrupted (a source the runtime does not poll, or a FIFO
// given as FILE that no writer has opened yet) is left to end with the
// process: Stop then returns at once, and the goroutine returns as soon as
// its call does, without touching anything else.
func (in *input) Stop() {
	in.mu.Lock()
	select {
	case <-in.stop:
	default:
		close(in.stop)
	}
	src := in.src
	in.mu.Unlock()
	select {
	case <-in.done:
		return
	default:
	}
	if d, ok := src.(interface{ SetReadDeadline(time.Time) error }); ok && d.SetReadDeadline(time.Unix(1, 0)) == nil {
		<-in.done // the pending read returns os.ErrDeadlineExceeded
	}
}

// lineFeed hands out an input's lines one at a time. It is owned by the
// one goroutine that reads the input's lines.
type lineFeed struct {
	src   *input
	batch []rawLine // received, not handed out yet
}

// next returns the next line. ok is false after the last line, or when
// ctx ends first.
func (f *lineFeed) next(ctx context.Context) (l rawLine, ok bool) {
	for len(f.batch) == 0 {
		select {
		case b, ok := <-f.src.lines:
			if !ok {
				return rawLine{}, false
			}
			f.batch = b
		case <-ctx.Done():
			return rawLine{}, false
		}
	}
	l = f.batch[0]
	f.batch[0] = rawLine{}
	f.batch = f.batch[1:]
	return l, true
}

// parse turns l into a request; skip is true for blank lines and comments.
// A line that cannot be read or may not run fails with the reason.
func (in *input) parse(l rawLine) (line inputLine, skip bool) {
	if l.err != nil {
		return failedLine(l.n, l.err), false
	}
	return in.p.parse(l.n, l.text)
}

// Err returns why reading ended before the end of the input, if it did:
// call it once lines is closed, or after Stop. It waits for the goroutine
// to return, unless Stop was called: then it never waits, since the
// goroutine may be left in a read that nothing can interrupt, and a read
// that Stop ended is no error.
func (in *input) Err() error {
	select {
	case <-in.done:
		return in.err
	case <-in.stop:
	}
	select {
	case <-in.done:
		return in.err
	default:
		return nil // still blocked in a read or an open that Stop ends
	}
}

// failedLine is line n, which cannot run: it goes through the engine as a
// request that fails with err, so it gets its answer in order.
func failedLine(n int, err error) inputLine {
	in := inputLine{n: n, err: fmt.Errorf("line %d: %w", n, err)}
	in.req = requests.New("", "")
	in.req.Fail(in.err)
	return in
}

// openInput returns how the input goroutine opens fetch's input: the file
// named path, or stdin when path is "" or "-". stdin is reopened, where the
// platform allows, as a source whose reads Stop can interrupt.
func openInput(path string, stdin io.Reader) func() (io.ReadCloser, error) {
	if path != "" && path != "-" {
		return func() (io.ReadCloser, error) { return os.Open(path) }
	}
	return func() (io.ReadCloser, error) {
		if f, ok := stdin.(*os.File); ok {
			if r := reopenStdin(f); r != nil {
				return r, nil
			}
		}
		return io.NopCloser(stdin), nil
	}
}
