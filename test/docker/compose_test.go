// Package docker_test checks docker/ without a container engine: the structure of compose.yaml (a named
// volume for PostgreSQL, healthchecks, depends_on on healthy or completed services, non-root users, no
// password written in any file), init-secrets.sh, and that each service's command works outside a
// container — the same binaries, the same configuration files and environment, with only paths and
// ports adapted — against a real PostgreSQL, and a real Mosquitto reached over TLS and secure websockets.
package docker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"gopkg.in/yaml.v3"

	"github.com/iotauth/iotauth/test/harness"
)

var pg *harness.Postgres

func TestMain(m *testing.M) { os.Exit(harness.RunWithPostgres(m, &pg)) }

type composeFile struct {
	Name     string             `yaml:"name"`
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

type service struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	User        string            `yaml:"user"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Secrets     []string          `yaml:"secrets"`
	Volumes     []string          `yaml:"volumes"`
	// depends_on in its long form only: the short list form starts a service before the ones it needs
	// are ready.
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
		Disable     bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
	Ports   []string `yaml:"ports"`
	Restart string   `yaml:"restart"`
}

func dockerDir(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "docker")
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dockerDir(t), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key (dependson, healtcheck) fails here instead of being ignored
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

// userinfoPassword finds a URL with a password in it (postgres://user:pw@host).
var userinfoPassword = regexp.MustCompile(`[a-z]+://[^/\s:@]+:[^@\s]+@`)

// TestComposeStructure: the compose file a new operator runs is fit for use.
func TestComposeStructure(t *testing.T) {
	c := loadCompose(t)
	for _, name := range []string{"postgres", "migrate", "iotauth", "mosquitto"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %s", name)
		}
	}
	// PostgreSQL keeps its data in a named volume.
	if _, ok := c.Volumes["pgdata"]; !ok {
		t.Error("no named volume pgdata")
	}
	if pgs := c.Services["postgres"]; !contains(pgs.Volumes, "pgdata:/var/lib/postgresql/data") {
		t.Errorf("postgres does not keep its data in the named volume: %v", pgs.Volumes)
	}
	for name, s := range c.Services {
		// Non-root users everywhere.
		if u := strings.SplitN(s.User, ":", 2)[0]; u == "" || u == "root" || u == "0" {
			t.Errorf("%s: user %q, want a non-root user", name, s.User)
		}
		// Long-running services have a healthcheck; the one-shot migration does not restart.
		if name == "migrate" {
			if s.Restart != "no" {
				t.Errorf("migrate: restart %q, want \"no\" (one shot)", s.Restart)
			}
			// The image's healthcheck is serve's: a one-shot would show "starting" until it exits.
			if s.Healthcheck == nil || !s.Healthcheck.Disable {
				t.Error("migrate: the image's healthcheck is not disabled")
			}
		} else if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD" {
			t.Errorf("%s: no healthcheck (exec form)", name)
		}
		for dep, d := range s.DependsOn {
			want := "service_healthy"
			if dep == "migrate" {
				want = "service_completed_successfully"
			}
			if d.Condition != want {
				t.Errorf("%s depends on %s with condition %q, want %s", name, dep, d.Condition, want)
			}
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("%s depends on a service %s that does not exist", name, dep)
			}
		}
		for _, sec := range s.Secrets {
			if _, ok := c.Secrets[sec]; !ok {
				t.Errorf("%s uses an undeclared secret %s", name, sec)
			}
		}
		// No password in the environment: secrets come from files.
		for k, v := range s.Environment {
			if strings.Contains(k, "PASSWORD") && !strings.HasSuffix(k, "_FILE") || k == "JWT_SECRET" || k == "DATABASE_URL" {
				t.Errorf("%s: %s is set in the environment; use its _FILE form with a secret", name, k)
			}
			if userinfoPassword.MatchString(v) {
				t.Errorf("%s: %s holds a URL with a password", name, k)
			}
		}
	}
	// Migrations run before the API and the broker start.
	for _, name := range []string{"iotauth", "mosquitto"} {
		if c.Services[name].DependsOn["migrate"].Condition != "service_completed_successfully" || c.Services[name].DependsOn["postgres"].Condition != "service_healthy" {
			t.Errorf("%s does not wait for a healthy postgres and a completed migrate", name)
		}
	}
	if cmd := c.Services["migrate"].Command; len(cmd) != 1 || cmd[0] != "migrate" {
		t.Errorf("migrate runs %v", cmd)
	}
	// Published ports: the container ports 8883 and 9001 (websockets), on a host address and port the
	// operator may change (the container test publishes them on 127.0.0.1 only).
	for svc, want := range map[string][]string{"mosquitto": {"8883", "9001"}, "iotauth": {"8080"}} {
		ports := c.Services[svc].Ports
		for _, p := range want {
			if !containsSuffix(ports, ":"+p) {
				t.Errorf("%s publishes %v, want container port %s", svc, ports, p)
			}
		}
		for _, p := range ports {
			if !strings.HasPrefix(p, "${IOTAUTH_PUBLISH_ADDR:-0.0.0.0}:") {
				t.Errorf("%s publishes %s on a fixed address; want ${IOTAUTH_PUBLISH_ADDR:-0.0.0.0}:…", svc, p)
			}
		}
	}
	// docker-compose 1.x refuses a top-level name: the project is named with -p.
	if c.Name != "" {
		t.Errorf("compose.yaml sets a top-level name (%q), which docker-compose 1.29 refuses; document -p instead", c.Name)
	}
	// No literal password in any file of docker/ that is not generated.
	for _, f := range []string{"compose.yaml", "mosquitto.conf", "Dockerfile.iotauth", "Dockerfile.mosquitto"} {
		b, err := os.ReadFile(filepath.Join(dockerDir(t), f))
		if err != nil {
			t.Fatal(err)
		}
		if m := userinfoPassword.Find(b); m != nil {
			t.Errorf("%s holds a URL with a password: %s…", f, m[:min(len(m), 20)])
		}
		if regexp.MustCompile(`(?m)^\s*(POSTGRES_PASSWORD|JWT_SECRET|plugin_opt_dsn)[ :=]`).Match(b) {
			t.Errorf("%s sets a password or DSN literally", f)
		}
	}
	conf := readFile(t, filepath.Join(dockerDir(t), "mosquitto.conf"))
	for _, want := range []string{"plugin_opt_dsn_file /run/secrets/database_url", "listener 9001\nprotocol websockets", "allow_anonymous false"} {
		if !strings.Contains(conf, want) {
			t.Errorf("mosquitto.conf lacks %q", want)
		}
	}
	for _, f := range []string{"Dockerfile.iotauth", "Dockerfile.mosquitto"} {
		d := readFile(t, filepath.Join(dockerDir(t), f))
		if !regexp.MustCompile(`(?m)^USER [1-9][0-9]*:[1-9][0-9]*$`).MatchString(d) || !strings.Contains(d, "HEALTHCHECK") {
			t.Errorf("%s: no numeric non-root USER or no HEALTHCHECK", f)
		}
	}
	ignore := readFile(t, filepath.Join(dockerDir(t), "..", ".dockerignore"))
	for _, want := range []string{".git", "build/", "docker/secrets/", "docker/certs/", "**/node_modules/"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(ignore) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

func containsSuffix(list []string, suffix string) bool {
	for _, v := range list {
		if strings.HasSuffix(v, suffix) {
			return true
		}
	}
	return false
}

// defaults resolves ${VAR:-default} as compose does when VAR is unset.
var defaults = regexp.MustCompile(`\$\{[A-Za-z_]+:-([^}]*)\}`)

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// initSecrets runs docker/init-secrets.sh into fresh directories and returns them.
func initSecrets(t *testing.T) (secrets, certs string) {
	t.Helper()
	dir := t.TempDir()
	secrets, certs = filepath.Join(dir, "secrets"), filepath.Join(dir, "certs")
	out, err := exec.Command("bash", filepath.Join(dockerDir(t), "init-secrets.sh"), secrets, certs, "localhost").CombinedOutput()
	if err != nil {
		t.Fatalf("init-secrets.sh: %v\n%s", err, out)
	}
	return secrets, certs
}

// TestInitSecrets: the script makes consistent random secrets (the database URL carries the PostgreSQL
// password), readable files in private directories, a CA-signed server certificate, and keeps them
// when run again.
func TestInitSecrets(t *testing.T) {
	secrets, certs := initSecrets(t)
	pw := strings.TrimSpace(readFile(t, filepath.Join(secrets, "postgres_password")))
	dsn := strings.TrimSpace(readFile(t, filepath.Join(secrets, "database_url")))
	jwt := strings.TrimSpace(readFile(t, filepath.Join(secrets, "jwt_secret")))
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := u.User.Password(); len(pw) < 24 || p != pw || u.Host != "postgres:5432" {
		t.Fatalf("database_url does not carry the generated password for postgres:5432")
	}
	if len(jwt) < 32 {
		t.Fatalf("jwt_secret has %d bytes, iotauth needs 32", len(jwt))
	}
	for _, d := range []string{secrets, certs} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want 0700", d, fi.Mode().Perm())
		}
	}
	for _, f := range []string{"secrets/postgres_password", "secrets/database_url", "secrets/jwt_secret", "certs/ca.pem", "certs/server.pem", "certs/server.key"} {
		if fi, err := os.Stat(filepath.Join(filepath.Dir(secrets), f)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v, want mode 0644 (read by the containers' non-root users)", f, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(certs, "ca.pem"))))
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, "server.pem"), filepath.Join(certs, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	out, err := exec.Command("bash", filepath.Join(dockerDir(t), "init-secrets.sh"), secrets, certs).CombinedOutput()
	if err != nil || strings.TrimSpace(readFile(t, filepath.Join(secrets, "postgres_password"))) != pw {
		t.Fatalf("a second run changed the password (%v)\n%s", err, out)
	}
}

// runtime is the stand-in for a container's filesystem and network: /run/secrets/<name> files (the
// compose secrets) and free loopback ports for the published ones.
type runtime struct {
	t       *testing.T
	c       composeFile
	secrets string // holds one file per compose secret, as /run/secrets does
}

func newRuntime(t *testing.T, dsn string) *runtime {
	t.Helper()
	c := loadCompose(t)
	secretsDir, certsDir := initSecrets(t)
	// The one adaptation of content: the database URL names the test's PostgreSQL, not postgres:5432.
	if err := os.WriteFile(filepath.Join(secretsDir, "database_url"), []byte(dsn+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Mosquitto started as root (here) drops to the mosquitto user: this directory is open to it as
	// /run/secrets is to a container's user (t.TempDir's parent is private to root).
	top, err := os.MkdirTemp("", "iotauth-compose-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	run := filepath.Join(top, "run-secrets")
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dockerDir(t))
	for name, s := range c.Secrets {
		file := defaults.ReplaceAllString(s.File, "$1")
		src := filepath.Join(base, file)
		switch {
		case strings.HasPrefix(file, "./secrets/"):
			src = filepath.Join(secretsDir, strings.TrimPrefix(file, "./secrets/"))
		case strings.HasPrefix(file, "./certs/"):
			src = filepath.Join(certsDir, strings.TrimPrefix(file, "./certs/"))
		default:
			t.Fatalf("secret %s from %s: not made by init-secrets.sh", name, s.File)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("secret %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(run, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &runtime{t: t, c: c, secrets: run}
}

// env is a service's environment as compose passes it (interpolation with defaults; the host's
// environment sets none of them here), /run/secrets paths mapped, ports replaced.
func (r *runtime) env(name string, ports map[string]string) []string {
	r.t.Helper()
	interp := regexp.MustCompile(`\$\{[A-Za-z_]+(:-([^}]*))?\}`)
	out := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range r.c.Services[name].Environment {
		v = interp.ReplaceAllString(v, "$2")
		v = strings.ReplaceAll(v, "/run/secrets/", r.secrets+"/")
		for from, to := range ports {
			v = strings.ReplaceAll(v, from, to)
		}
		out = append(out, k+"="+v)
	}
	return out
}

// command maps a service's command (or healthcheck) to this machine: the image's binaries are the built
// ones, with the same arguments.
func command(ctx context.Context, t *testing.T, argv []string, env []string) *exec.Cmd {
	t.Helper()
	bin := argv[0]
	switch bin {
	case "/iotauth":
		bin = iotauthBin(t)
	case "mosquitto":
		bin = harness.MosquittoPath()
	}
	cmd := exec.CommandContext(ctx, bin, argv[1:]...)
	cmd.Env = env
	return cmd
}

func iotauthBin(t *testing.T) string {
	t.Helper()
	bin, err := harness.BinPath()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(p)
}

// waitHealthy runs a healthcheck until it succeeds, within 30 s (generous: a loaded 2-core machine).
func waitHealthy(t *testing.T, name string, argv []string, env []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := command(ctx, t, argv, env).CombinedOutput()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's healthcheck %v never passed: %v\n%s", name, argv, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// start runs a long-lived service process, stopped with SIGTERM at the end of the test.
func start(t *testing.T, cmd *exec.Cmd) *harness.Buffer {
	t.Helper()
	out := &harness.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
	return out
}

// emptyDatabase makes a database with no schema at all (the state before the first `compose up`).
func emptyDatabase(t *testing.T) string {
	t.Helper()
	base := pg.NewDatabase(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("compose_%d", time.Now().UnixNano())
	harness.Exec(t, base, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		harness.Exec(t, base, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u.Path = "/" + name
	return u.String()
}

// TestComposeServicesRunOutsideContainers runs every service of compose.yaml as compose would, on this
// machine: postgres's healthcheck against the test PostgreSQL, the migrate one-shot on an empty
// database, iotauth serve with the compose environment until its healthcheck passes, and Mosquitto with
// docker/mosquitto.conf (paths and ports adapted) until its healthcheck passes; then an agent made with
// the CLI connects over TLS (8883) and secure websockets (9001).
func TestComposeServicesRunOutsideContainers(t *testing.T) {
	dsn := emptyDatabase(t)
	r := newRuntime(t, dsn)
	u, _ := url.Parse(dsn)

	// postgres: its healthcheck, pointed at the test server.
	pgBin, err := harness.PostgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	hc := r.c.Services["postgres"].Healthcheck.Test[1:]
	isready := append([]string{filepath.Join(pgBin, hc[0])}, hc[1:]...)
	for i := 1; i+1 < len(isready); i++ {
		switch isready[i] {
		case "-h":
			isready[i+1] = u.Hostname()
		case "-p":
			isready[i+1] = u.Port()
		}
	}
	if !contains(isready, u.Port()) {
		t.Fatalf("postgres healthcheck %v: want -h and -p (TCP, not the socket of the image's init server)", hc)
	}
	if out, err := exec.Command(isready[0], isready[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("postgres healthcheck %v: %v\n%s", isready, err, out)
	}

	// migrate: the one-shot, before anything serves.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := command(ctx, t, append([]string{"/iotauth"}, r.c.Services["migrate"].Command...), r.env("migrate", nil)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "schema migrated from version 0") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}

	// iotauth: serve with the compose environment (ports adapted), until its healthcheck passes.
	apiPort, metricsPort := freePort(t), freePort(t)
	ports := map[string]string{"0.0.0.0:8080": "127.0.0.1:" + apiPort, "0.0.0.0:9180": "127.0.0.1:" + metricsPort}
	env := r.env("iotauth", ports)
	logs := start(t, command(context.Background(), t, append([]string{"/iotauth"}, r.c.Services["iotauth"].Command...), env))
	waitHealthy(t, "iotauth", r.c.Services["iotauth"].Healthcheck.Test[1:], env)
	if strings.Contains(logs.String(), readFile(t, filepath.Join(r.secrets, "jwt_secret"))[:20]) {
		t.Fatal("serve logged the JWT secret")
	}

	// mosquitto: docker/mosquitto.conf with paths and ports adapted, as root here (it drops to the
	// mosquitto user, which reads the secrets as the container's user 1883 would).
	plugin, err := harness.PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	mqttPort, wsPort := freePort(t), freePort(t)
	conf := readFile(t, filepath.Join(dockerDir(t), "mosquitto.conf"))
	conf = strings.NewReplacer(
		"/run/secrets/", r.secrets+"/",
		"/usr/lib/mosquitto-iotauth.so", plugin,
		"listener 8883\n", "listener "+mqttPort+" 127.0.0.1\n",
		"listener 9001\n", "listener "+wsPort+" 127.0.0.1\n",
	).Replace(conf)
	confPath := filepath.Join(filepath.Dir(r.secrets), "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	mcmd := append([]string(nil), r.c.Services["mosquitto"].Command...)
	for i, a := range mcmd {
		if a == "/etc/mosquitto/mosquitto.conf" {
			mcmd[i] = confPath
		}
	}
	mlog := start(t, command(context.Background(), t, mcmd, []string{"PATH=" + os.Getenv("PATH")}))
	mhc := append([]string(nil), r.c.Services["mosquitto"].Healthcheck.Test[1:]...)
	for i := range mhc {
		mhc[i] = strings.ReplaceAll(mhc[i], "/8883", "/"+mqttPort)
	}
	waitHealthy(t, "mosquitto", mhc, nil)
	if m := regexp.MustCompile(`(iotsk|iotmp)_[0-9A-Za-z]{20,}`).FindString(mlog.String()); m != "" || strings.Contains(mlog.String(), u.User.String()) {
		t.Fatal("the broker logged a secret or the database URL")
	}

	// An agent made with the CLI (the migrate image's binary and environment) connects over both
	// listeners, checked against the CA that init-secrets.sh made.
	aout, err := command(ctx, t, []string{"/iotauth", "agent", "create", "-name", "compose"}, r.env("migrate", nil)).Output()
	if err != nil {
		t.Fatalf("agent create: %v", err)
	}
	var a struct {
		MQTT struct{ Username, Password, ClientID string } `json:"mqtt"`
	}
	if err := json.Unmarshal(aout, &a); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(r.secrets, "mqtt_ca"))))
	for _, broker := range []string{"ssl://localhost:" + mqttPort, "wss://localhost:" + wsPort} {
		o := mqtt.NewClientOptions().AddBroker(broker).SetClientID(a.MQTT.ClientID).SetUsername(a.MQTT.Username).
			SetPassword(a.MQTT.Password).SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost"}).
			SetConnectTimeout(10 * time.Second).SetAutoReconnect(false)
		c := mqtt.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: connect with the agent's credentials: %v", broker, tok.Error())
		}
		pub := c.Publish("agents/"+strings.TrimPrefix(a.MQTT.ClientID, "agent-")+"/hello", 1, false, "hi")
		if !pub.WaitTimeout(10*time.Second) || pub.Error() != nil {
			t.Fatalf("%s: publish: %v", broker, pub.Error())
		}
		c.Disconnect(50)
		// A wrong password is refused on the same listener.
		o.SetPassword("iotmp_wrong").SetClientID(a.MQTT.ClientID)
		bad := mqtt.NewClient(o)
		if tok := bad.Connect(); tok.WaitTimeout(15*time.Second) && tok.Error() == nil {
			bad.Disconnect(10)
			t.Fatalf("%s: a wrong password connected", broker)
		}
	}
}
