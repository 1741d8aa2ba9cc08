package paginate

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/courier-go/courier/requests"
)

// Cursor returns the strategy of cursor feeds: the next page's request is
// the page's own with query parameter param set to the value of the JSON
// field at field, a dotted path ("next_cursor", "meta.next_cursor"); the
// first request's other query parameters stay on every page. The crawl
// ends on a page whose field is missing, null or empty (or false).
func Cursor(field, param string, opts ...Option) Paginator {
	return &cursorStrategy{options: newOptions(opts), field: field, param: param}
}

type cursorStrategy struct {
	options
	field, param string
}

func (s *cursorStrategy) Next(resp *requests.Response) (*requests.Request, error) {
	if resp == nil || resp.Request == nil {
		return nil, fmt.Errorf("paginate: response has no request")
	}
	v, err := decode(resp)
	if err != nil {
		return nil, err
	}
	c, ok := lookup(v, s.field)
	if !ok {
		return nil, nil
	}
	var cursor string
	switch c := c.(type) {
	case nil:
		return nil, nil
	case string:
		cursor = c
	case json.Number:
		cursor = c.String()
	case bool:
		if !c {
			return nil, nil
		}
		return nil, fmt.Errorf("paginate: page %s: cursor %q is true, not a string or a number", redacted(resp), s.field)
	default:
		return nil, fmt.Errorf("paginate: page %s: cursor %s is a%s %s, not a string or a number", redacted(resp), strconv.Quote(s.field), article(kind(c)), kind(c))
	}
	if cursor == "" {
		return nil, nil
	}
	return withParam(resp.Request, s.param, cursor), nil
}

func article(k string) string {
	if k != "" && k[0] == 'o' {
		return "n"
	}
	return ""
}
