package harness

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserRunsScript proves the headless browser renders a loopback page and runs its script.
func TestBrowserRunsScript(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/app.js" {
			w.Header().Set("Content-Type", "text/javascript")
			fmt.Fprint(w, `document.getElementById("out").textContent = "ran " + (6*7);`)
			return
		}
		fmt.Fprint(w, `<!doctype html><p id="out">not yet</p><script src="/app.js"></script>`)
	}))
	t.Cleanup(srv.Close)
	ctx := Browser(t)
	// chromedp v0.23's API is generic: Do runs steps, Run one action that returns a value.
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL), chromedp.WaitVisible("#out"),
		chromedp.Poll[chromedp.Void](`document.getElementById("out").textContent === "ran 42"`)); err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text("#out"))
	if err != nil {
		t.Fatal(err)
	}
	if text != "ran 42" {
		t.Fatalf("page says %q", text)
	}
}
