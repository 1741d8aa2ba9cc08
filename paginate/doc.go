// Package paginate holds the pagination strategies for [engine.Engine.Pages]:
// given one page's answer, a [Paginator] returns the request for the next
// page, or nil when the crawl is over.
//
// [Link] follows RFC 8288 Link headers (rel="next"), [Cursor] copies a
// cursor from a JSON field into a query parameter, [Page] counts pages
// and [Offset] counts items. Each takes [Option]s: [MaxPages] bounds the
// crawl, [Items] names the JSON array that holds a page's items, [Total]
// names the field that gives the number of items in all, and [Parallel]
// bounds how many pages are fetched ahead when the last page is known.
//
// A strategy keeps no state between calls: it reads where it is from the
// answered request itself (its Link header, its page or offset
// parameter), so one strategy value may serve any number of crawls at
// once. A page's request is a copy of the request before it, with only
// what the strategy moves (the URL, the cursor, the page or the offset)
// changed: headers, options and the other query parameters carry over.
//
// Write your own strategy by implementing [Paginator]. One that can tell
// every remaining page from an answer implements [Planner] too, and one
// with a bound on pages implements [Limited].
//
// [engine.Engine.Pages]: https://pkg.go.dev/github.com/courier-go/courier/engine#Engine.Pages
package paginate
