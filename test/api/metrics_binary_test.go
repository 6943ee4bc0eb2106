package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestServeMetricsOnTheirOwnListener is O2 (docs/security.md) through the real binary: /metrics is served on
// METRICS_ADDR and answers 404 on the public API listener, while /healthz and /readyz stay public;
// METRICS_ADDR=off serves no metrics; an address the operator chose that is taken stops the start with
// a message that names the setting.
func TestServeMetricsOnTheirOwnListener(t *testing.T) {
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	p := startServe(t, pg.NewDatabase(t), "METRICS_ADDR="+metrics)
	api, logs := p.base, p.logs
	for _, path := range []string{"/healthz", "/readyz"} {
		if st, _ := get(t, api+path); st != 200 {
			t.Fatalf("%s on the API listener: %d", path, st)
		}
	}
	if st, body := get(t, api+"/metrics"); st != 404 || strings.Contains(body, "iotauth_http_requests_total") {
		t.Fatalf("/metrics on the API listener: %d %.200s", st, body)
	}
	st, body := get(t, "http://"+metrics+"/metrics")
	if st != 200 || !strings.Contains(body, `iotauth_http_requests_total{code="200",method="GET",route="GET /healthz"}`) {
		t.Fatalf("/metrics on METRICS_ADDR: %d %.500s", st, body)
	}
	if st, _ := get(t, "http://"+metrics+"/api/v1/openapi.json"); st != 404 {
		t.Fatalf("the metrics listener serves the API: %d", st)
	}
	if !strings.Contains(logs.String(), "metrics listening") {
		t.Fatalf("serve did not log its metrics address:\n%s", logs.String())
	}

	t.Run("off", func(t *testing.T) {
		p := startServe(t, pg.NewDatabase(t), "METRICS_ADDR=off")
		if !strings.Contains(p.logs.String(), "metrics disabled") {
			t.Fatalf("METRICS_ADDR=off not reported:\n%s", p.logs.String())
		}
	})
	t.Run("taken", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary(t), "serve", "-migrate", "-listen", "127.0.0.1:0")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + pg.NewDatabase(t), "JWT_SECRET=" + string(hsSecret), "METRICS_ADDR=" + metrics}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err == nil || !strings.Contains(out.String(), "METRICS_ADDR") {
			t.Fatalf("serve started on a taken metrics address (err %v):\n%s", err, out.String())
		}
	})
}
