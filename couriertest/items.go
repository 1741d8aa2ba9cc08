package couriertest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Item is what the item endpoints answer.
type Item struct {
	ID    string  `json:"id"`
	Name  string  `json:"name"`
	Price float64 `json:"price"`
}

// ItemFor returns the item GET /items/{id} answers for id: the same for
// every API and every run.
func ItemFor(id string) Item {
	h := fnv.New32a()
	h.Write([]byte(id))
	return Item{ID: id, Name: "item-" + id, Price: float64(h.Sum32()%10000) / 100}
}

// Page is what GET /items answers. Which fields are set depends on how the
// request pages: Page, PerPage and TotalPages with ?page, Offset and Limit
// with ?offset, NextCursor with ?cursor (empty on the last page). Total
// and Items are always set.
type Page struct {
	Items      []Item `json:"items"`
	Total      int    `json:"total"`
	Page       int    `json:"page,omitempty"`
	PerPage    int    `json:"per_page,omitempty"`
	TotalPages int    `json:"total_pages,omitempty"`
	Offset     *int   `json:"offset,omitempty"`
	Limit      int    `json:"limit,omitempty"`
	NextCursor string `json:"next_cursor,omitempty"`
}

func (a *API) item(w http.ResponseWriter, r *http.Request) {
	a.writeCacheable(w, r, ItemFor(r.PathValue("id")))
}

// writeCacheable answers v with an ETag, or 304 when the request's
// If-None-Match names it.
func (a *API) writeCacheable(w http.ResponseWriter, r *http.Request, v any) {
	body, _ := json.Marshal(v)
	body = append(body, '\n')
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	if a.cfg.maxAge > 0 {
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(int(a.cfg.maxAge/time.Second)))
	}
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		a.notModified.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// etagMatches is the weak comparison If-None-Match asks for (RFC 9110
// section 13.1.2).
func etagMatches(header, etag string) bool {
	for cand := range strings.SplitSeq(header, ",") {
		cand = strings.TrimPrefix(strings.TrimSpace(cand), "W/")
		if cand == "*" || cand == etag {
			return true
		}
	}
	return false
}

// items answers one page of the API's items, paged as the request asks.
func (a *API) items(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size := a.cfg.pageSize
	for _, k := range []string{"per_page", "limit"} {
		if v := q.Get(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				writeJSON(w, 400, apiError{"invalid_request", k + " must be a whole number from 1 to 1000"})
				return
			}
			size = n
		}
	}
	total := a.cfg.items
	var p Page
	var start int
	next := url.Values{}
	switch {
	case q.Has("cursor"):
		var ok bool
		if start, ok = decodeCursor(q.Get("cursor")); !ok {
			writeJSON(w, 400, apiError{"invalid_request", "cursor is not one this API gave"})
			return
		}
		p.Limit = size
		if start+size < total {
			p.NextCursor = encodeCursor(start + size)
			next.Set("cursor", p.NextCursor)
		}
	case q.Has("offset"):
		n, err := strconv.Atoi(q.Get("offset"))
		if err != nil || n < 0 {
			writeJSON(w, 400, apiError{"invalid_request", "offset must be a whole number"})
			return
		}
		start, p.Offset, p.Limit = n, &n, size
		if start+size < total {
			next.Set("offset", strconv.Itoa(start+size))
		}
	default:
		page := 1
		if v := q.Get("page"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				writeJSON(w, 400, apiError{"invalid_request", "page must be a whole number from 1"})
				return
			}
			page = n
		}
		start = (page - 1) * size
		p.Page, p.PerPage, p.TotalPages = page, size, max((total+size-1)/size, 1)
		if page < p.TotalPages {
			next.Set("page", strconv.Itoa(page+1))
		}
		w.Header().Set("Link", a.pageLinks(r, page, p.TotalPages, next))
	}
	p.Total = total
	p.Items = make([]Item, 0, size)
	for i := start; i < min(start+size, total); i++ {
		p.Items = append(p.Items, ItemFor(strconv.Itoa(i+1)))
	}
	if p.Page == 0 && len(next) > 0 {
		w.Header().Set("Link", linkTo(r, next, "next"))
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	a.writeCacheable(w, r, p)
}

// pageLinks is the Link header of a numbered page: next (when set in
// next), prev, first and last.
func (a *API) pageLinks(r *http.Request, page, last int, next url.Values) string {
	var links []string
	if len(next) > 0 {
		links = append(links, linkTo(r, next, "next"))
	}
	if page > 1 {
		links = append(links, linkTo(r, url.Values{"page": {strconv.Itoa(page - 1)}}, "prev"))
	}
	links = append(links, linkTo(r, url.Values{"page": {"1"}}, "first"), linkTo(r, url.Values{"page": {strconv.Itoa(last)}}, "last"))
	return strings.Join(links, ", ")
}

// linkTo is one Link value: r's absolute URL with the parameters of set
// replaced, and its relation.
func linkTo(r *http.Request, set url.Values, rel string) string {
	q := r.URL.Query()
	for k, v := range set {
		q[k] = v
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}
	return fmt.Sprintf("<%s>; rel=%q", u.String(), rel)
}

func encodeCursor(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("after:" + strconv.Itoa(offset)))
}

func decodeCursor(c string) (int, bool) {
	if c == "" {
		return 0, true // the first page
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, false
	}
	v, ok := strings.CutPrefix(string(b), "after:")
	n, err := strconv.Atoi(v)
	return n, ok && err == nil && n >= 0
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || !json.Valid(body) {
		writeJSON(w, 400, apiError{"invalid_request", "body must be JSON"})
		return
	}
	key := r.Header.Get("Idempotency-Key")
	a.mu.Lock()
	if prev, ok := a.created[key]; ok && key != "" {
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Idempotent-Replayed", "true")
		w.WriteHeader(201)
		w.Write(prev)
		return
	}
	n := a.creates.Add(1)
	answer, _ := json.Marshal(map[string]any{"id": n, "item": json.RawMessage(body)})
	if key != "" {
		a.created[key] = answer
	}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(201)
	w.Write(answer)
}

// firstAttempt reports whether this is the first time path is asked for.
func (a *API) firstAttempt(path string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attempts[path]++
	return a.attempts[path] == 1
}

func (a *API) flakyItem(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if f, ok := a.flakyFault(id); ok && a.firstAttempt(r.URL.Path) {
		a.flaky.Add(1)
		if f.hasRetry {
			w.Header().Set("Retry-After", a.retryAfter(f.retryAfter, f.asDate))
		}
		writeJSON(w, f.status, apiError{"unavailable", "try again later"})
		return
	}
	writeJSON(w, 200, ItemFor(id))
}

func (a *API) reset(w http.ResponseWriter, r *http.Request) {
	if a.firstAttempt(r.URL.Path) {
		a.resetConn(w)
		return
	}
	writeJSON(w, 200, ItemFor(r.PathValue("id")))
}

func (a *API) slow(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	ms = min(max(ms, 0), 10_000)
	serveSlowly(w, r, time.Duration(ms)*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, ItemFor(r.PathValue("id")))
	}))
}

// UploadedPart describes one part POST /upload received.
type UploadedPart struct {
	Field       string `json:"field"`
	Filename    string `json:"filename,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	Value       string `json:"value,omitempty"` // plain fields only
}

// UploadAnswer is what POST /upload answers.
type UploadAnswer struct {
	ContentLength int64          `json:"content_length"` // -1 when chunked
	Parts         []UploadedPart `json:"parts"`
}

func (a *API) upload(w http.ResponseWriter, r *http.Request) {
	mr, err := r.MultipartReader()
	if err != nil {
		writeJSON(w, 400, apiError{"invalid_request", err.Error()})
		return
	}
	ans := UploadAnswer{ContentLength: r.ContentLength, Parts: []UploadedPart{}}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeJSON(w, 400, apiError{"invalid_request", err.Error()})
			return
		}
		h := sha256.New()
		var value strings.Builder
		var dst io.Writer = h
		if p.FileName() == "" {
			dst = io.MultiWriter(h, &value)
		}
		n, err := io.Copy(dst, p)
		if err != nil {
			writeJSON(w, 400, apiError{"invalid_request", err.Error()})
			return
		}
		up := UploadedPart{Field: p.FormName(), Filename: p.FileName(), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
		if p.FileName() != "" {
			up.ContentType = p.Header.Get("Content-Type")
		} else {
			up.Value = value.String()
		}
		ans.Parts = append(ans.Parts, up)
	}
	a.uploads.Add(1)
	writeJSON(w, 200, ans)
}

func (a *API) redirect(w http.ResponseWriter, r *http.Request) {
	to := r.URL.Query().Get("to")
	if to == "" {
		writeJSON(w, 400, apiError{"invalid_request", "to is required"})
		return
	}
	http.Redirect(w, r, to, http.StatusFound)
}
