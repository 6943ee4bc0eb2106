package harness

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is the browser the UI tests drive: IOTAUTH_CHROMIUM, or Debian's chromium package
// (installed by scripts/deps.sh).
func ChromiumPath() string {
	if p := os.Getenv("IOTAUTH_CHROMIUM"); p != "" {
		return p
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return "/usr/bin/chromium"
}

// Browser starts a headless Chromium with an empty profile of its own and returns a chromedp context for
// one tab; the browser is closed and its profile removed when the test ends. The flags keep it off the
// network (this machine has none beyond loopback) and quiet: no first-run, sync, component updates or
// background requests, so it only ever talks to the servers the test starts.
func Browser(t testing.TB) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ChromiumPath()),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // tests run as root in CI
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start headless chromium (%s): %v; run scripts/deps.sh to install Debian's chromium", ChromiumPath(), err)
	}
	return ctx
}
