package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot finds the module root (the directory holding go.mod) above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// PluginPath is the freshly built plugin: $IOTAUTH_PLUGIN, or build/mosquitto-iotauth.so in the repo.
// testhooks selects the build with test-only hooks (a username that panics), used by the panic test.
func PluginPath(testhooks bool) (string, error) {
	name := "mosquitto-iotauth.so"
	env := "IOTAUTH_PLUGIN"
	if testhooks {
		name, env = "mosquitto-iotauth-testhooks.so", "IOTAUTH_PLUGIN_TESTHOOKS"
	}
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "build", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("plugin %s not built: run 'make build' first (or 'make test', which builds it)", p)
	}
	return p, nil
}

// MosquittoPath is the broker binary the tests run: $IOTAUTH_MOSQUITTO (make test-compat points it at
// the brokers it builds into build/mosquitto-VERSION/), or mosquitto from PATH.
func MosquittoPath() string {
	if p := os.Getenv("IOTAUTH_MOSQUITTO"); p != "" {
		return p
	}
	return "mosquitto"
}

// MosquittoVersion is the version the broker binary reports ("2.0.11"), or "" when it cannot tell.
func MosquittoVersion() string {
	mosquittoVersionOnce.Do(func() {
		out, _ := exec.Command(MosquittoPath(), "-h").CombinedOutput()
		if _, rest, ok := strings.Cut(string(out), "mosquitto version "); ok {
			mosquittoVersion = strings.Fields(rest + " ")[0]
		}
	})
	return mosquittoVersion
}

var (
	mosquittoVersionOnce sync.Once
	mosquittoVersion     string
)

// MosquittoAtLeast reports whether the broker's version is at least major.minor.patch (false when
// unknown).
func MosquittoAtLeast(major, minor, patch int) bool {
	var v [3]int
	for i, f := range strings.SplitN(MosquittoVersion(), ".", 3) {
		n, err := strconv.Atoi(strings.TrimRightFunc(f, func(r rune) bool { return r < '0' || r > '9' }))
		if err != nil {
			return false
		}
		v[i] = n
	}
	want := [3]int{major, minor, patch}
	for i := range v {
		if v[i] != want[i] {
			return v[i] > want[i]
		}
	}
	return true
}

// BrokerConfig describes a Mosquitto to start.
type BrokerConfig struct {
	// Plugin is the .so to load; empty starts a broker with allow_anonymous true and no auth (the
	// benchmark baseline).
	Plugin string
	// Options are plugin_opt_ key/value pairs, in order (keys without the prefix).
	Options [][2]string
	// Extra are raw mosquitto.conf lines.
	Extra []string
	// Port to listen on; 0 picks a free one.
	Port int
	// Quiet logs only errors, warnings and notices (for benchmarks).
	Quiet bool
	// PerListener sets per_listener_settings true; the plugin line then belongs to the listener.
	PerListener bool
	// LoadAs loads the plugin once under this name (plugin_load, Mosquitto 2.1) and attaches it to the
	// listener with plugin_use; Extra may attach it to more listeners.
	LoadAs string
}

// Broker is a running mosquitto process.
type Broker struct {
	Port    int
	Dir     string
	LogPath string
	conf    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the process exits

	outMu sync.Mutex
	out   strings.Builder // what mosquitto printed to stdout/stderr
}

// Addr is host:port of the listener.
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.Port) }

// URL is the tcp:// URL of the listener, for paho.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// StartBroker writes a config, starts mosquitto and waits until it listens. It is stopped when the test
// ends and its folder removed; when the test failed, the log's tail is printed and the folder (config and
// full log) is kept, its path printed.
func StartBroker(t testing.TB, c BrokerConfig) *Broker {
	t.Helper()
	b, err := LaunchBroker(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			_ = os.Remove(filepath.Join(b.Dir, ownerFile)) // kept on purpose: later runs must not reap it
			t.Logf("mosquitto log (kept in %s):\n%s", b.LogPath, tail(b.Log(), 60))
			return
		}
		os.RemoveAll(b.Dir)
	})
	return b
}

// Close stops the broker and removes its folder (for LaunchBroker's callers).
func (b *Broker) Close() {
	b.Stop()
	os.RemoveAll(b.Dir)
}

// LaunchBroker is StartBroker without a testing.TB (for the benchmark tool). Call Stop.
func LaunchBroker(c BrokerConfig) (b *Broker, err error) {
	reapStale("iotauth-mosq-", nil)
	dir, err := os.MkdirTemp("", "iotauth-mosq-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir) // the error carries the log's tail
		}
	}()
	if err := writeOwner(dir); err != nil {
		return nil, err
	}
	// Mosquitto started as root drops to the mosquitto user; let it write its log here.
	_ = os.Chmod(dir, 0o777)
	port := c.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	b = &Broker{Port: port, Dir: dir, LogPath: filepath.Join(dir, "mosquitto.log"), conf: filepath.Join(dir, "mosquitto.conf")}
	var conf strings.Builder
	fmt.Fprintf(&conf, "per_listener_settings %t\nlistener %d 127.0.0.1\nmax_keepalive 600\n", c.PerListener, port)
	fmt.Fprintf(&conf, "log_dest file %s\nlog_timestamp_format %%Y-%%m-%%dT%%H:%%M:%%S\n", b.LogPath)
	if c.Quiet {
		conf.WriteString("log_type error\nlog_type warning\nlog_type notice\n")
	} else {
		conf.WriteString("log_type all\n")
	}
	if c.Plugin == "" {
		conf.WriteString("allow_anonymous true\n")
	} else {
		if c.LoadAs != "" {
			fmt.Fprintf(&conf, "allow_anonymous false\nplugin_load %s %s\n", c.LoadAs, c.Plugin)
		} else {
			fmt.Fprintf(&conf, "allow_anonymous false\nplugin %s\n", c.Plugin)
		}
		for _, kv := range c.Options {
			fmt.Fprintf(&conf, "plugin_opt_%s %s\n", kv[0], kv[1])
		}
		if c.LoadAs != "" {
			fmt.Fprintf(&conf, "plugin_use %s\n", c.LoadAs)
		}
	}
	for _, l := range c.Extra {
		conf.WriteString(l + "\n")
	}
	if err := os.WriteFile(b.conf, []byte(conf.String()), 0o644); err != nil {
		return nil, err
	}
	if err := b.Start(); err != nil {
		return nil, err
	}
	return b, nil
}

// Start (re)starts the process and waits up to 15 s for the listener.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.outMu.Lock()
	b.out.Reset()
	b.outMu.Unlock()
	cmd := exec.Command(MosquittoPath(), "-c", b.conf)
	// A test binary killed by its timeout runs no cleanup: take the broker down with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = &lockedWriter{mu: &b.outMu, b: &b.out}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto (install it with 'make deps'): %w", err)
	}
	b.cmd = cmd
	done := make(chan struct{})
	b.done = done
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("mosquitto exited at start (%v); log:\n%s", exitErr, tail(b.logLocked(), 30))
		default:
		}
		c, err := net.DialTimeout("tcp", b.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return fmt.Errorf("mosquitto did not listen on %s within 15s; log:\n%s", b.Addr(), tail(b.logLocked(), 30))
}

// Wait reports whether the process exited within d.
func (b *Broker) Wait(d time.Duration) bool {
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Pid is the broker's process id.
func (b *Broker) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd.Process.Pid
}

// Signal sends sig to the broker (SIGHUP reloads it).
func (b *Broker) Signal(sig syscall.Signal) error {
	return syscall.Kill(b.Pid(), sig)
}

// Alive reports whether the process still runs.
func (b *Broker) Alive() bool { return !b.Wait(0) }

// Stop terminates the broker (SIGTERM, then SIGKILL after 5 s).
func (b *Broker) Stop() {
	b.mu.Lock()
	cmd := b.cmd
	b.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if !b.Wait(5 * time.Second) {
		_ = cmd.Process.Kill()
		b.Wait(2 * time.Second)
	}
}

// Log returns the broker's log file and anything it printed.
func (b *Broker) Log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.logLocked()
}

func (b *Broker) logLocked() string {
	data, _ := os.ReadFile(b.LogPath)
	b.outMu.Lock()
	defer b.outMu.Unlock()
	return string(data) + b.out.String()
}

// WaitLog waits up to d for the log to contain s.
func (b *Broker) WaitLog(s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(b.Log(), s) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
