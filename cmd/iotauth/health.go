package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

func init() {
	register("health", "ask a running 'iotauth serve' whether it is ready (GET /readyz); exit 0 when it is (for container healthchecks)", health)
}

// health is the container healthcheck of `iotauth serve`: the image has no shell or curl. By default it
// asks http://127.0.0.1:<port of LISTEN_ADDR>/readyz, which answers 200 only while the database does.
func health(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("health", stderr)
	def := "http://127.0.0.1:8080/readyz"
	if addr := os.Getenv("LISTEN_ADDR"); addr != "" {
		if _, port, err := net.SplitHostPort(addr); err == nil && port != "" {
			def = "http://" + net.JoinHostPort("127.0.0.1", port) + "/readyz"
		}
	}
	target := fs.String("url", def, "the readiness URL (default from $LISTEN_ADDR's port)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if u, err := url.Parse(*target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintln(stderr, "-url must be an http(s) URL such as http://127.0.0.1:8080/readyz")
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *target, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s answered %s", *target, res.Status)
	}
	fmt.Fprintln(stdout, "ready")
	return nil
}
