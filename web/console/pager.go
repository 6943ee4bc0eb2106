package console

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

// pager is the navigation of one list on a page: its total, the positions shown, and links to the next
// and previous pages and back to the first. A page may hold several lists (Keys); each pages with its
// own query parameters, <name> (the API's cursor), <name>_from (the position of the page's first row)
// and <name>_back (repeated: the cursors of the pages between the first and this one, so that the API's
// forward-only cursors can go back), and keeps the others' and the filters.
type pager struct {
	ID       string // the list's element id prefix: <ID>-total, <ID>-next, <ID>-prev, <ID>-first
	Total    int64
	From, To int
	Next     string
	Prev     string
	First    string
}

// maxBack bounds the cursors a list keeps to go back (beyond it, Previous page is not offered and
// First page still is), so that a URL stays short.
const maxBack = 40

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
	query := r.URL.Query()
	cur := query.Get(name)
	back := query[name+"_back"]
	link := func(cursor string, at int, back []string) string {
		q := url.Values{}
		for k, v := range query {
			if k != name && k != name+"_from" && k != name+"_back" && k != "done" {
				q[k] = v
			}
		}
		if cursor != "" {
			q.Set(name, cursor)
			q.Set(name+"_from", strconv.Itoa(at))
			if len(back) > 0 {
				q[name+"_back"] = back
			}
		}
		u := r.URL.Path
		if e := q.Encode(); e != "" {
			u += "?" + e
		}
		return u
	}
	if next != "" {
		nb := slices.Clone(back)
		if cur != "" {
			nb = append(nb, cur)
		}
		if len(nb) > maxBack {
			nb = nil // too long a trail: the next page links back to the first only
		}
		p.Next = link(next, from+n, nb)
	}
	if cur != "" {
		p.First = link("", 0, nil)
		// Every page before this one was full: its size is the rows before this page over their pages.
		size := (from - 1) / (len(back) + 1)
		switch {
		case len(back) == 0 && from > 1:
			p.Prev = p.First
		case len(back) > 0 && size > 0:
			p.Prev = link(back[len(back)-1], from-size, back[:len(back)-1])
		}
	}
	return p
}
