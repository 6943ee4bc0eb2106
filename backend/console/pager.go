package console

import (
	"net/http"
	"net/url"
	"strconv"
)

// pager is the navigation of one list on a page: its total, the positions shown, and links to the next
// page and back to the first. A page may hold several lists (Keys); each pages with its own query
// parameters, <name> (the API's cursor) and <name>_from (the position of the page's first row), and
// keeps the others' and the filters.
type pager struct {
	ID       string // the list's element id prefix: <ID>-total, <ID>-next, <ID>-first
	Total    int64
	From, To int
	Next     string
	First    string
}

// listCursor reads a list's cursor and the position of its first row from the page's query.
func listCursor(r *http.Request, name string) (cursor string, from int) {
	q := r.URL.Query()
	from, err := strconv.Atoi(q.Get(name + "_from"))
	if err != nil || from < 1 {
		from = 1
	}
	return q.Get(name), from
}

// newPager builds the pager of a list whose page of n rows started at from, whose API answer said
// next (the cursor of the next page, "" at the end) and whose total is total.
func newPager(r *http.Request, id, name string, from, n int, next string, total int64) pager {
	p := pager{ID: id, Total: total, From: from, To: from + n - 1}
	if n == 0 {
		p.From, p.To = 0, 0
	}
	link := func(cursor string, at int) string {
		q := url.Values{}
		for k, v := range r.URL.Query() {
			if k != name && k != name+"_from" && k != "done" {
				q[k] = v
			}
		}
		if cursor != "" {
			q.Set(name, cursor)
			q.Set(name+"_from", strconv.Itoa(at))
		}
		u := r.URL.Path
		if e := q.Encode(); e != "" {
			u += "?" + e
		}
		return u
	}
	if next != "" {
		p.Next = link(next, from+n)
	}
	if r.URL.Query().Get(name) != "" {
		p.First = link("", 0)
	}
	return p
}
