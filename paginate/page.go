package paginate

import (
	"fmt"
	"iter"
	"strconv"

	"github.com/courier-go/courier/requests"
)

// Page returns the strategy of numbered pages: the next page's request is
// the page's own with query parameter param one higher, starting from the
// first request's value (1 when it has none). The crawl ends on a page
// with no items (see [Items]); nothing is requested after it.
//
// When the last page is known from the first pages (a Link rel="last"
// carrying param, or a [Total] with as many items a page as the first
// one had), the remaining pages are fetched in parallel (see [Parallel]).
func Page(param string, opts ...Option) Paginator {
	return &countStrategy{options: newOptions(opts), param: param, start: 1, step: 1}
}

// Offset returns the strategy of offsets: the next page's request is the
// page's own with query parameter param size higher, starting from the
// first request's value (0 when it has none). The crawl ends on a page
// with no items (see [Items]); nothing is requested after it. With a
// [Total], or a Link rel="last" carrying param, the remaining pages are
// fetched in parallel (see [Parallel]).
func Offset(param string, size int, opts ...Option) Paginator {
	return &countStrategy{options: newOptions(opts), param: param, start: 0, step: size, offset: true}
}

// countStrategy is Page (step 1, counting pages) and Offset (step size,
// counting items).
type countStrategy struct {
	options
	param  string
	start  int
	step   int
	offset bool
}

// current returns the value of the counter on resp's page.
func (s *countStrategy) current(resp *requests.Response) (int, error) {
	if resp == nil || resp.Request == nil {
		return 0, fmt.Errorf("paginate: response has no request")
	}
	if s.step <= 0 {
		return 0, fmt.Errorf("paginate: offset %q: page size %d is not positive", s.param, s.step)
	}
	v, ok := param(resp.Request, s.param)
	if !ok {
		return s.start, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("paginate: page %s: parameter %q is %q, not a whole number", redacted(resp), s.param, v)
	}
	return n, nil
}

func (s *countStrategy) Next(resp *requests.Response) (*requests.Request, error) {
	cur, err := s.current(resp)
	if err != nil {
		return nil, err
	}
	n, _, err := countItems(resp, s.items)
	if err != nil || n == 0 {
		return nil, err
	}
	return withParam(resp.Request, s.param, strconv.Itoa(cur+s.step)), nil
}

func (s *countStrategy) Plan(resp *requests.Response) (iter.Seq[*requests.Request], int) {
	if s.window <= 1 {
		return nil, 0
	}
	cur, err := s.current(resp)
	if err != nil {
		return nil, 0
	}
	n, body, err := countItems(resp, s.items)
	if err != nil || n == 0 {
		return nil, 0
	}
	last, ok := s.lastFromLink(resp)
	if !ok && s.total != "" {
		var t int
		if t, ok = total(body, s.total); ok {
			if s.offset {
				// The last offset that still holds an item.
				last = (t - 1) / s.step * s.step
			} else {
				// Pages of the size of this one, counted from start.
				last = s.start + (t+n-1)/n - 1
			}
		}
	}
	if !ok || last <= cur || (last-cur)/s.step > 1<<20 {
		return nil, 0
	}
	return func(yield func(*requests.Request) bool) {
		for i := cur + s.step; i <= last; i += s.step {
			if !yield(withParam(resp.Request, s.param, strconv.Itoa(i))) {
				return
			}
		}
	}, s.window
}

// lastFromLink reads the counter's last value from a Link rel="last".
func (s *countStrategy) lastFromLink(resp *requests.Response) (int, bool) {
	base, err := pageURL(resp)
	if err != nil {
		return 0, false
	}
	last := findLink(resp.Header, "last", base)
	if last == nil {
		return 0, false
	}
	v := last.Query().Get(s.param)
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 0
}
