package paginate

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/courier-go/courier/requests"
)

func page(path string, header http.Header, body string) *requests.Response {
	return &requests.Response{Status: 200, Header: header, Body: []byte(body), Request: requests.New("GET", path)}
}

func TestLinkFollowsNextAcrossFieldsAndRelativeReferences(t *testing.T) {
	cases := []struct {
		name  string
		links []string
		want  string
	}{
		{"absolute", []string{`<https://api.test/v1/items?page=2>; rel="next"`}, "https://api.test/v1/items?page=2"},
		{"relative path", []string{`<items?page=2>; rel=next`}, "https://api.test/v1/items?page=2"},
		{"absolute path", []string{`</v1/items?page=2>; rel="next"`}, "https://api.test/v1/items?page=2"},
		{"query only", []string{`<?page=2>; rel="next"`}, "https://api.test/v1/items?page=2"},
		{"several links a field", []string{`<?page=1>; rel="first", <?page=2>; rel="next", <?page=9>; rel="last"`}, "https://api.test/v1/items?page=2"},
		{"several fields", []string{`<?page=1>; rel="prev"`, `<?page=2>; title="a, b; c"; rel="next"`}, "https://api.test/v1/items?page=2"},
		{"several relations", []string{`<?page=2>; rel="next last"`}, "https://api.test/v1/items?page=2"},
		{"case of rel", []string{`<?page=2>; REL="Next"`}, "https://api.test/v1/items?page=2"},
		{"malformed link skipped", []string{`garbage, <?page=2>; rel="next"`}, "https://api.test/v1/items?page=2"},
		{"none", []string{`<?page=1>; rel="prev"`}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{"Link": c.links}
			next, err := Link().Next(page("https://api.test/v1/items?page=1", h, ""))
			require.NoError(t, err)
			if c.want == "" {
				assert.Nil(t, next)
				return
			}
			require.NotNil(t, next)
			assert.Equal(t, c.want, next.Path)
		})
	}
}

func TestLinkKeepsTheRequestsHeaders(t *testing.T) {
	first := requests.New("GET", "https://api.test/items", requests.WithHeader("Accept", "application/vnd.x+json"))
	resp := &requests.Response{Status: 200, Header: http.Header{"Link": {`<?page=2>; rel="next"`}}, Request: first}
	next, err := Link().Next(resp)
	require.NoError(t, err)
	assert.Equal(t, "application/vnd.x+json", next.Header.Get("Accept"))
}

func TestLinkPlansEveryPageUpToLast(t *testing.T) {
	h := http.Header{"Link": {`<https://api.test/items?page=2&per_page=10>; rel="next", <https://api.test/items?page=5&per_page=10>; rel="last"`}}
	pl := Link().(Planner)
	pages, window := pl.Plan(page("https://api.test/items?per_page=10", h, ""))
	require.Equal(t, defaultWindow, window)
	var got []string
	for r := range pages {
		u, err := url.Parse(r.Path)
		require.NoError(t, err)
		got = append(got, u.Query().Get("page"))
		assert.Equal(t, "10", u.Query().Get("per_page"))
	}
	assert.Equal(t, []string{"2", "3", "4", "5"}, got)

	// Two parameters moving between next and last: no plan.
	h = http.Header{"Link": {`<?page=2&after=x>; rel="next", <?page=5&after=y>; rel="last"`}}
	_, window = pl.Plan(page("https://api.test/items", h, ""))
	assert.Zero(t, window)
	// Parallel(1) is one page at a time.
	_, window = Link(Parallel(1)).(Planner).Plan(page("https://api.test/items", http.Header{"Link": {`<?page=2>; rel="next", <?page=5>; rel="last"`}}, ""))
	assert.Zero(t, window)
}

func TestCursorReadsNestedFieldsAndKeepsOtherParameters(t *testing.T) {
	first := requests.New("GET", "https://api.test/feed?limit=50", requests.WithQuery("filter", "open"))
	c := Cursor("meta.next_cursor", "cursor")
	resp := &requests.Response{Status: 200, Body: []byte(`{"data":[1],"meta":{"next_cursor":"abc"}}`), Request: first}
	next, err := c.Next(resp)
	require.NoError(t, err)
	require.NotNil(t, next)
	v, _ := param(next, "cursor")
	assert.Equal(t, "abc", v)
	v, _ = param(next, "limit")
	assert.Equal(t, "50", v)
	assert.Equal(t, []string{"open"}, next.Query["filter"])

	// The next page replaces the cursor, never adds a second one.
	resp = &requests.Response{Status: 200, Body: []byte(`{"meta":{"next_cursor":123}}`), Request: next}
	next2, err := c.Next(resp)
	require.NoError(t, err)
	u, err := pageURL(&requests.Response{Request: next2})
	require.NoError(t, err)
	assert.Equal(t, []string{"123"}, u.Query()["cursor"])

	for _, end := range []string{`{"meta":{}}`, `{"meta":{"next_cursor":null}}`, `{"meta":{"next_cursor":""}}`, `{}`} {
		n, err := c.Next(&requests.Response{Body: []byte(end), Request: first})
		require.NoError(t, err, end)
		assert.Nil(t, n, end)
	}
	_, err = c.Next(&requests.Response{Body: []byte(`{"meta":{"next_cursor":{"a":1}}}`), Request: first})
	assert.ErrorContains(t, err, `"meta.next_cursor" is an object`)
	_, err = c.Next(&requests.Response{Body: []byte(`<html>`), Request: first})
	assert.ErrorContains(t, err, "not JSON")
}

func TestPageAndOffsetCountFromTheFirstRequest(t *testing.T) {
	p := Page("page", Items("data"))
	next, err := p.Next(page("https://api.test/x?page=3", nil, `{"data":[1,2]}`))
	require.NoError(t, err)
	v, _ := param(next, "page")
	assert.Equal(t, "4", v)
	assert.NotContains(t, next.Path, "page=3", "the old value is gone from the path")

	next, err = Page("page").Next(page("https://api.test/x", nil, `[1]`))
	require.NoError(t, err)
	v, _ = param(next, "page")
	assert.Equal(t, "2", v)

	next, err = Offset("offset", 25).Next(page("https://api.test/x", nil, `[1]`))
	require.NoError(t, err)
	v, _ = param(next, "offset")
	assert.Equal(t, "25", v)

	for _, empty := range []string{`{"data":[]}`, `{"data":null}`, `{}`} {
		next, err = p.Next(page("https://api.test/x?page=3", nil, empty))
		require.NoError(t, err)
		assert.Nil(t, next, empty)
	}
	_, err = p.Next(page("https://api.test/x?page=3", nil, `{"data":"no"}`))
	assert.ErrorContains(t, err, `"data" is a string, not an array`)
	_, err = p.Next(page("https://api.test/x?page=two", nil, `[1]`))
	assert.ErrorContains(t, err, `"page" is "two"`)
	_, err = Offset("offset", 0).Next(page("https://api.test/x", nil, `[1]`))
	assert.ErrorContains(t, err, "page size 0 is not positive")
}

func TestPageAndOffsetPlanFromATotal(t *testing.T) {
	values := func(pages func(func(*requests.Request) bool), name string) []string {
		var out []string
		for r := range pages {
			v, _ := param(r, name)
			out = append(out, v)
		}
		return out
	}
	pages, w := Page("page", Items("items"), Total("total"), Parallel(3)).(Planner).Plan(page("https://api.test/x", nil, `{"total":7,"items":[1,2,3]}`))
	require.Equal(t, 3, w)
	assert.Equal(t, []string{"2", "3"}, values(pages, "page"))

	pages, w = Offset("offset", 3, Items("items"), Total("meta.total")).(Planner).Plan(page("https://api.test/x", nil, `{"meta":{"total":"7"},"items":[1,2,3]}`))
	require.NotZero(t, w)
	assert.Equal(t, []string{"3", "6"}, values(pages, "offset"))

	h := http.Header{"Link": {`<?page=4>; rel="last"`}}
	pages, w = Page("page").(Planner).Plan(page("https://api.test/x?page=2", h, `[1]`))
	require.NotZero(t, w)
	assert.Equal(t, []string{"3", "4"}, values(pages, "page"))

	_, w = Page("page").(Planner).Plan(page("https://api.test/x", nil, `[1]`))
	assert.Zero(t, w, "no total and no last link: no plan")
}

func TestMaxPagesIsEveryStrategysLimit(t *testing.T) {
	for _, p := range []Paginator{Link(MaxPages(3)), Cursor("c", "c", MaxPages(3)), Page("p", MaxPages(3)), Offset("o", 1, MaxPages(3))} {
		l, ok := p.(Limited)
		require.True(t, ok)
		assert.Equal(t, 3, l.MaxPages())
	}
}
