package api

import (
	"net/http"
	"strings"
	"testing"
)

// TestPagesBesideTheRouteTable: a page is served through the middleware (security headers), other
// methods on its path get the API's 405 problem, unknown paths beside it the 404 problem, and the
// OpenAPI document does not list it.
func TestPagesBesideTheRouteTable(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("<p>hi</p>")) })
	s := offlineServer(t, func(c *Config) { c.Pages = []Page{{Pattern: "GET /live", Handler: page}} })
	w := call(s, "GET", "/live", "", "")
	if w.Code != 200 || w.Body.String() != "<p>hi</p>" {
		t.Fatalf("GET /live: %d %q", w.Code, w.Body)
	}
	for _, h := range []string{"X-Content-Type-Options", "X-Frame-Options", "Cache-Control"} {
		if w.Header().Get(h) == "" {
			t.Errorf("GET /live lacks %s", h)
		}
	}
	w = call(s, "POST", "/live", "application/json", "{}")
	if w.Code != http.StatusMethodNotAllowed || problemOf(t, w).Code != CodeMethodNotAllowed {
		t.Fatalf("POST /live: %d %s", w.Code, w.Body)
	}
	w = call(s, "GET", "/live/nothing-here", "", "")
	if w.Code != http.StatusNotFound || problemOf(t, w).Code == "" {
		t.Fatalf("GET /live/nothing-here: %d %s", w.Code, w.Body)
	}
	if doc := call(s, "GET", "/api/v1/openapi.json", "", "").Body.String(); strings.Contains(doc, `"/live"`) {
		t.Fatal("the OpenAPI document lists the page")
	}
	for _, r := range s.Routes() {
		if r.Path == "/live" {
			t.Fatal("the page is in the route table")
		}
	}
}

// TestPagesRefused: a page must be a GET with a handler, and a clash with a route is an error, not a
// panic.
func TestPagesRefused(t *testing.T) {
	page := http.NotFoundHandler()
	for _, p := range []Page{
		{Pattern: "POST /live", Handler: page},
		{Pattern: "/live", Handler: page},
		{Pattern: "GET /live"},
		{Pattern: "GET /healthz", Handler: page},
	} {
		st := offlineServer(t)
		c := st.cfg
		c.Pages = []Page{p}
		if _, err := New(c); err == nil {
			t.Errorf("page %q accepted", p.Pattern)
		}
	}
}
