//go:build containers

package containers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// engine is Podman as this test runs it: its own configuration (containers.conf, storage.conf) in a cache
// directory kept between runs (the base images and build layers stay there), the Docker-compatible API
// on a socket in the test's temporary directory, and docker-compose talking to that socket.
type engine struct {
	t       *testing.T
	cache   string   // IOTAUTH_CONTAINERS_CACHE: storage, networks, the two configuration files
	env     []string // os.Environ() + CONTAINERS_CONF, CONTAINERS_STORAGE_CONF
	socket  string   // the API socket, for DOCKER_HOST
	project string   // compose project name: every container, volume and network the test makes
}

// The settings this machine needs (see docs/containers.md): runc (crun fails on hybrid cgroups), explicit
// ulimits (raising the defaults is not permitted here), cgroupfs and file events (no systemd), netavark
// with its own network directory. None of this is in the user-facing files.
const containersConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[network]
network_backend = "netavark"
network_config_dir = "%[1]s/networks"

[engine]
helper_binaries_dir = ["/usr/lib/podman", "/usr/libexec/podman", "/usr/local/libexec/podman"]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`

const storageConf = `[storage]
driver = "overlay"
graphroot = "%[1]s/storage"
runroot = "%[1]s/run"
`

func newEngine(t *testing.T, tmp string) *engine {
	t.Helper()
	cache := os.Getenv("IOTAUTH_CONTAINERS_CACHE")
	if cache == "" {
		cache = "/var/tmp/iotauth-containers"
	}
	for _, dir := range []string{"networks", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cache, dir), 0o700); err != nil {
			t.Fatalf("container cache %s: %v (set IOTAUTH_CONTAINERS_CACHE to a writable directory)", cache, err)
		}
	}
	for name, text := range map[string]string{"containers.conf": containersConf, "storage.conf": storageConf} {
		if err := os.WriteFile(filepath.Join(cache, name), []byte(fmt.Sprintf(text, cache)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := &engine{
		t:       t,
		cache:   cache,
		socket:  filepath.Join(tmp, "podman.sock"),
		project: fmt.Sprintf("iotauthct%d", os.Getpid()),
	}
	e.env = append(os.Environ(),
		"CONTAINERS_CONF="+filepath.Join(cache, "containers.conf"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(cache, "storage.conf"),
		// Buildah keeps the RUN --mount=type=cache directories under TMPDIR: in the cache too.
		"TMPDIR="+filepath.Join(cache, "tmp"))
	return e
}

// podman runs a podman command and returns its standard output; a failure ends the test.
func (e *engine) podman(args ...string) string {
	e.t.Helper()
	out, err := e.tryPodman(args...)
	if err != nil {
		e.t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (e *engine) tryPodman(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "podman", args...)
	cmd.Env = e.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// logs is a container's log: its standard output and error, as `podman logs` prints them on its own.
func (e *engine) logs(id string) string {
	e.t.Helper()
	cmd := exec.Command("podman", "logs", id)
	cmd.Env = e.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("podman logs %s: %v\n%s", id, err, out)
	}
	return string(out)
}

// run runs a command with the engine's environment (plus extra), its output logged when it fails.
func (e *engine) run(ctx context.Context, dir string, extra []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(append([]string(nil), e.env...), extra...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startService starts `podman system service` on the test's socket, stopped at the end of the test.
func (e *engine) startService() {
	e.t.Helper()
	cmd := exec.Command("podman", "system", "service", "--time=0", "unix://"+e.socket)
	cmd.Env = e.env
	logs := &harness.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("podman system service: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.socket)
	}}, Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("http://podman/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			e.t.Fatalf("podman system service exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("podman system service does not answer on %s: %v\n%s", e.socket, err, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// containers lists the project's containers (running or not) by compose service name.
func (e *engine) containers() map[string]string {
	e.t.Helper()
	out := e.podman("ps", "-a", "--filter", "label=com.docker.compose.project="+e.project,
		"--format", `{{.ID}} {{index .Labels "com.docker.compose.service"}}`)
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			m[f[1]] = f[0]
		}
	}
	return m
}

// inspection is the part of `podman inspect` this test reads.
type inspection struct {
	ID    string
	Name  string
	State struct {
		Status     string
		Running    bool
		ExitCode   int
		StartedAt  time.Time
		FinishedAt time.Time
		Health     struct {
			Status string
			Log    []struct {
				Start    time.Time
				End      time.Time
				ExitCode int
			}
		}
	}
	Config struct {
		User        string
		Healthcheck *struct {
			Test     []string
			Interval time.Duration
		}
	}
}

func (e *engine) inspect(id string) inspection {
	e.t.Helper()
	var list []inspection
	if err := json.Unmarshal([]byte(e.podman("inspect", "--type", "container", id)), &list); err != nil || len(list) != 1 {
		e.t.Fatalf("podman inspect %s: %v", id, err)
	}
	return list[0]
}

// healthDriver runs the containers' healthchecks at their intervals. Podman schedules healthchecks with
// systemd timers; this machine has no systemd, so the test does what the timers would: `podman
// healthcheck run` for every running container of the project that has a healthcheck.
type healthDriver struct {
	e       *engine
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	healthy map[string]time.Time // container ID -> start of its first passing check
}

// firstHealthy is when the first passing healthcheck of a container started (zero: none passed yet):
// the container turned healthy after that instant.
func (h *healthDriver) firstHealthy(id string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.healthy[id]
}

func (e *engine) driveHealthchecks() *healthDriver {
	h := &healthDriver{e: e, stop: make(chan struct{}), done: make(chan struct{}), healthy: map[string]time.Time{}}
	go func() {
		defer close(h.done)
		last := map[string]time.Time{}
		interval := map[string]time.Duration{}
		for {
			out, err := e.tryPodman("ps", "--filter", "label=com.docker.compose.project="+e.project, "--format", "{{.ID}}")
			if err == nil {
				var wg sync.WaitGroup
				for _, id := range strings.Fields(out) {
					if _, ok := interval[id]; !ok {
						var list []inspection
						if js, err := e.tryPodman("inspect", "--type", "container", id); err == nil && json.Unmarshal([]byte(js), &list) == nil && len(list) == 1 {
							interval[id] = 0
							if hc := list[0].Config.Healthcheck; hc != nil && len(hc.Test) > 0 && hc.Test[0] != "NONE" {
								interval[id] = max(hc.Interval, time.Second)
							}
						}
					}
					if iv := interval[id]; iv > 0 && time.Since(last[id]) >= iv {
						last[id] = time.Now()
						wg.Add(1)
						go func(start time.Time) {
							defer wg.Done()
							if _, err := e.tryPodman("healthcheck", "run", id); err == nil {
								h.mu.Lock()
								if _, ok := h.healthy[id]; !ok {
									h.healthy[id] = start
								}
								h.mu.Unlock()
							}
						}(last[id])
					}
				}
				wg.Wait()
			}
			select {
			case <-h.stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	e.t.Cleanup(h.Stop)
	return h
}

func (h *healthDriver) Stop() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	<-h.done
}

// waitHealthy waits until the service's container reports healthy.
func (e *engine) waitHealthy(service string, within time.Duration) inspection {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if id := e.containers()[service]; id != "" {
			in := e.inspect(id)
			if in.State.Health.Status == "healthy" {
				return in
			}
			if time.Now().After(deadline) {
				logs := e.logs(id)
				e.t.Fatalf("%s: not healthy after %v (state %s, health %s)\n%s", service, within, in.State.Status, in.State.Health.Status, logs)
			}
		} else if time.Now().After(deadline) {
			e.t.Fatalf("%s: no container after %v", service, within)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
