//go:build containers

// Package containers_test starts docker/compose.yaml for real: Podman runs the containers, docker-compose
// (1.29, which honours depends_on conditions) drives them through Podman's Docker-compatible socket, and
// the test checks the running stack from the outside, as an operator and a device would: healthchecks in
// order, an agent provisioned over REST on TLS and secure websockets, a revocation that kicks, a broker
// restart, data kept across down/up, no secret in inspect output, image layers or logs, non-root users;
// then the broker image built with Mosquitto 2.0.20 from source. `make test-containers` runs it (as root:
// it installs its packages and builds the base images when missing). docs/containers.md explains what
// the test environment changes.
package containers_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/test/harness"
)

// The Mosquitto release the source-built variant of the broker image is tested with (its tarball is in
// MOSQUITTO_SRC, the folder of Mosquitto source tarballs that make test-compat builds from too).
const sourceMosquitto = "2.0.20"

// stack is one compose project under test.
type stack struct {
	*engine
	root    string   // a copy of the repository: the compose file, the build context, the secrets
	extra   []string // compose's environment: ports, license, the API socket
	api     string   // http://127.0.0.1:port
	mqtt    string   // ssl://localhost:port
	wss     string   // wss://localhost:port
	ca      *x509.CertPool
	secrets []string // every secret this run made, for the leak scans
	health  *healthDriver
	begin   time.Time
}

func TestContainers(t *testing.T) {
	begin := time.Now()
	if os.Geteuid() != 0 {
		t.Fatal("the container test runs rootful Podman and mmdebstrap: run `make test-containers` as root")
	}
	for _, tool := range []string{"podman", "docker-compose", "mmdebstrap", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: `make test-containers` installs it (scripts/containers-deps.sh)", tool)
		}
	}
	repo, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp("", "iotauth-containers-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	s := &stack{engine: newEngine(t, tmp), root: filepath.Join(tmp, "repo"), begin: begin}

	// The build context as a user has it: the repository (with the /live bundle `make build` fetched)
	// and, in docker/secrets and docker/certs, what init-secrets.sh makes: .dockerignore must keep them
	// out of every image.
	copyTree(t, repo, s.root)
	if out, err := exec.Command("bash", filepath.Join(s.root, "docker", "init-secrets.sh")).CombinedOutput(); err != nil {
		t.Fatalf("init-secrets.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"secrets/postgres_password", "secrets/database_url", "secrets/jwt_secret", "certs/server.key", "certs/ca.key"} {
		b, err := os.ReadFile(filepath.Join(s.root, "docker", f))
		if err != nil {
			t.Fatal(err)
		}
		s.secrets = append(s.secrets, secretNeedle(string(b)))
	}
	s.ca = x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(s.root, "docker", "certs", "ca.pem"))
	if err != nil || !s.ca.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ca.pem from init-secrets.sh: %v", err)
	}

	// Base images (built once, then cached in the engine's storage).
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if out, err := s.run(ctx, repo, nil, filepath.Join(repo, "scripts", "containers-base-images.sh")); err != nil {
		t.Fatalf("base images: %v\n%s", err, out)
	}
	baseDone := time.Now()
	s.startService()
	s.configure(t, tmp)
	t.Cleanup(s.teardown)
	s.health = s.driveHealthchecks()

	s.compose(t, 15*time.Minute, "build")
	built := time.Now()
	s.compose(t, 5*time.Minute, "up", "-d")
	for _, svc := range []string{"iotauth", "mosquitto"} {
		s.waitHealthy(svc, 3*time.Minute)
	}
	if logs := s.logs(s.containers()["postgres"]); !strings.Contains(logs, "initialised") {
		t.Fatalf("postgres did not initialise its data on the first start:\n%s", logs)
	}
	t.Logf("stack up and healthy %v after the start of the test: base images %v, compose build %v, up until healthy %v (base images and build layers cached in %s are reused)",
		time.Since(begin).Round(time.Second), baseDone.Sub(begin).Round(time.Second), built.Sub(baseDone).Round(time.Second),
		time.Since(built).Round(time.Second), s.cache)

	t.Run("HealthchecksInOrder", s.healthchecksInOrder)
	t.Run("NonRoot", s.nonRoot)

	token := s.admin(t)
	a := s.provision(t, token, "ct-a")
	b := s.provision(t, token, "ct-b")
	t.Run("AgentOverTLSAndWSS", func(t *testing.T) {
		for _, url := range []string{s.mqtt, s.wss} {
			c := s.connect(t, url, a, nil)
			pub := c.Publish("agents/"+a.UUID+"/hello", 1, false, "hi")
			if !pub.WaitTimeout(15*time.Second) || pub.Error() != nil {
				t.Fatalf("%s: publish: %v", url, pub.Error())
			}
			c.Disconnect(100)
		}
	})
	t.Run("BrokerRestartReconnects", func(t *testing.T) {
		s.restartBroker(t, []agent{a, b})
	})
	t.Run("RevocationKicks", func(t *testing.T) {
		s.revokeKicks(t, token, a, s.mqtt)
	})
	t.Run("DataSurvivesDownUp", func(t *testing.T) {
		s.compose(t, 3*time.Minute, "down")
		if left := s.containers(); len(left) != 0 {
			t.Fatalf("containers left after down: %v", left)
		}
		s.compose(t, 5*time.Minute, "up", "-d")
		s.waitHealthy("mosquitto", 3*time.Minute)
		s.waitHealthy("iotauth", 3*time.Minute)
		if logs := s.logs(s.containers()["postgres"]); strings.Contains(logs, "initialised") {
			t.Fatalf("postgres initialised its data again after down/up:\n%s", logs)
		}
		// The agent made before, and its revoked sibling, are as they were.
		c := s.connect(t, s.mqtt, b, nil)
		c.Disconnect(100)
		if err := s.tryConnect(s.mqtt, a); err == nil {
			t.Fatal("the key revoked before down/up connects again")
		}
		s.admin(t) // logs in again (the admin exists)
	})
	t.Run("SourceBuiltMosquitto", func(t *testing.T) {
		s.sourceBuiltBroker(t, token, b)
	})
	// Last, once everything this run made exists: no secret in the engine's metadata, layers or logs.
	s.secrets = append(s.secrets, a.Password, b.Password, a.APIKey, b.APIKey, s.adminPassword())
	t.Run("NoSecretLeaks", s.noSecretLeaks)
}

// configure picks free loopback ports, makes a development license and sets compose's environment.
func (s *stack) configure(t *testing.T, tmp string) {
	t.Helper()
	port := func() string {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		return strconv.Itoa(p)
	}
	apiPort, mqttPort, wssPort := port(), port(), port()
	s.api, s.mqtt, s.wss = "http://127.0.0.1:"+apiPort, "ssl://localhost:"+mqttPort, "wss://localhost:"+wssPort
	// Registration over REST needs a license: one signed here with a throwaway key.
	bin, err := harness.BinPath()
	if err != nil {
		t.Fatal(err)
	}
	lic := filepath.Join(tmp, "license")
	if err := os.Mkdir(lic, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "license", "keygen", "--alg", "ed25519", "--out-dir", lic).CombinedOutput(); err != nil {
		t.Fatalf("license keygen: %v\n%s", err, out)
	}
	tok, err := exec.Command(bin, "license", "issue", "--private-key", filepath.Join(lic, "license-private.pem"),
		"--customer", "containers-test", "--max-devices", "100", "--expires", time.Now().AddDate(0, 0, 30).Format("2006-01-02")).Output()
	if err != nil {
		t.Fatalf("license issue: %v", err)
	}
	pub, err := os.ReadFile(filepath.Join(lic, "license-public.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s.extra = []string{
		"DOCKER_HOST=unix://" + s.socket,
		"COMPOSE_PROJECT_NAME=" + s.project,
		"IOTAUTH_PUBLISH_ADDR=127.0.0.1",
		"IOTAUTH_API_PORT=" + apiPort, "IOTAUTH_MQTT_PORT=" + mqttPort, "IOTAUTH_WSS_PORT=" + wssPort,
		"LICENSE_PUBLIC_KEY=" + string(pub), "LICENSE_KEY=" + strings.TrimSpace(string(tok)),
		"MOSQUITTO_VERSION=", "MOSQUITTO_SHA256=",
	}
}

// compose runs docker-compose on the copy's docker/compose.yaml; a failure ends the test.
func (s *stack) compose(t *testing.T, within time.Duration, args ...string) string {
	t.Helper()
	out, err := s.tryCompose(within, nil, args...)
	if err != nil {
		t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (s *stack) tryCompose(within time.Duration, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	full := append([]string{"-p", s.project, "-f", filepath.Join(s.root, "docker", "compose.yaml")}, args...)
	return s.run(ctx, s.root, append(append([]string(nil), s.extra...), env...), "docker-compose", full...)
}

// teardown removes every container, volume and network of the project (images stay: they are the cache),
// and fails the test if any is left.
func (s *stack) teardown() {
	t := s.t
	if out, err := s.tryCompose(3*time.Minute, nil, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		t.Errorf("docker-compose down: %v\n%s", err, out)
	}
	label := "label=com.docker.compose.project=" + s.project
	for _, kind := range [][]string{{"ps", "-a", "-q"}, {"volume", "ls", "-q"}, {"network", "ls", "-q"}} {
		out, err := s.tryPodman(append(kind, "--filter", label)...)
		if left := strings.Fields(out); err != nil || len(left) > 0 {
			t.Errorf("podman %s left behind: %v %v", kind[0], left, err)
			rm := map[string][]string{"ps": {"rm", "-f", "-v"}, "volume": {"volume", "rm", "-f"}, "network": {"network", "rm", "-f"}}[kind[0]]
			_, _ = s.tryPodman(append(rm, left...)...)
		}
	}
}

// healthchecksInOrder: postgres was healthy before migrate started, migrate had finished (exit 0)
// before the API and the broker started, and both of those went healthy.
func (s *stack) healthchecksInOrder(t *testing.T) {
	ids := s.containers()
	in := map[string]inspection{}
	for _, svc := range []string{"postgres", "migrate", "iotauth", "mosquitto"} {
		if ids[svc] == "" {
			t.Fatalf("no %s container: %v", svc, ids)
		}
		in[svc] = s.inspect(ids[svc])
	}
	pgHealthy := s.health.firstHealthy(ids["postgres"])
	m := in["migrate"].State
	switch {
	case pgHealthy.IsZero():
		t.Fatal("postgres never passed its healthcheck")
	case !m.StartedAt.After(pgHealthy):
		t.Errorf("migrate started at %v, before postgres was healthy (%v)", m.StartedAt, pgHealthy)
	case m.Status != "exited" || m.ExitCode != 0:
		t.Errorf("migrate: %s, exit code %d", m.Status, m.ExitCode)
	case m.Health.Status != "":
		t.Errorf("migrate (a one-shot) has a health status %q: compose.yaml should disable the image's healthcheck", m.Health.Status)
	}
	for _, svc := range []string{"iotauth", "mosquitto"} {
		st := in[svc].State
		if !st.StartedAt.After(m.FinishedAt) {
			t.Errorf("%s started at %v, before migrate finished (%v)", svc, st.StartedAt, m.FinishedAt)
		}
		if st.Health.Status != "healthy" {
			t.Errorf("%s: health %s", svc, st.Health.Status)
		}
	}
	t.Logf("postgres healthy %v, migrate %v–%v, iotauth started %v, mosquitto started %v", pgHealthy.Format(time.StampMilli),
		m.StartedAt.Format(time.StampMilli), m.FinishedAt.Format(time.StampMilli),
		in["iotauth"].State.StartedAt.Format(time.StampMilli), in["mosquitto"].State.StartedAt.Format(time.StampMilli))
}

// nonRoot: every container is configured with a non-root user, and the processes of the running ones
// run as that user.
func (s *stack) nonRoot(t *testing.T) {
	for svc, id := range s.containers() {
		in := s.inspect(id)
		if u := strings.SplitN(in.Config.User, ":", 2)[0]; u == "" || u == "root" || u == "0" {
			t.Errorf("%s: user %q", svc, in.Config.User)
		}
		if !in.State.Running {
			continue
		}
		out := s.podman("top", id, "user", "comm")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 2 {
			t.Errorf("%s: podman top shows no process:\n%s", svc, out)
		}
		for _, line := range lines[1:] {
			if f := strings.Fields(line); len(f) > 0 && (f[0] == "0" || f[0] == "root") {
				t.Errorf("%s: a process runs as root: %s", svc, line)
			}
		}
	}
}

// agent is what POST /api/v1/provision/agent answers.
type agent struct {
	UUID     string `json:"agentUuid"`
	APIKey   string `json:"apiKey"`
	KeyID    string `json:"keyId"`
	Username string
	Password string
	ClientID string
}

var adminPw atomic.Value

func (s *stack) adminPassword() string {
	if v, ok := adminPw.Load().(string); ok {
		return v
	}
	return ""
}

// admin creates the first admin with the CLI inside the API's container (once; the password on standard
// input) and logs in over REST; it returns the access token.
func (s *stack) admin(t *testing.T) string {
	t.Helper()
	if s.adminPassword() == "" {
		pw := "ct-" + randomText(t)
		cmd := exec.Command("podman", "exec", "-i", s.containers()["iotauth"], "/iotauth", "user", "create", "-email", "admin@example.com", "-role", "admin")
		cmd.Env = s.env
		cmd.Stdin = strings.NewReader(pw + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("user create in the iotauth container: %v\n%s", err, out)
		}
		adminPw.Store(pw)
	}
	var login struct {
		AccessToken string `json:"accessToken"`
	}
	s.rest(t, "POST", "/api/v1/auth/login", "", map[string]string{"email": "admin@example.com", "password": s.adminPassword()}, http.StatusOK, &login)
	return login.AccessToken
}

// provision registers an agent over REST with a fresh provisioning key.
func (s *stack) provision(t *testing.T, token, name string) agent {
	t.Helper()
	var key struct {
		Key string `json:"key"`
	}
	s.rest(t, "POST", "/api/v1/provision/keys", token, nil, http.StatusCreated, &key)
	var reg struct {
		agent
		MQTT struct {
			Username, Password string
			ClientID           string `json:"clientId"`
		} `json:"mqtt"`
	}
	s.rest(t, "POST", "/api/v1/provision/agent", "", map[string]string{"key": key.Key, "agentName": name}, http.StatusCreated, &reg)
	a := reg.agent
	a.Username, a.Password, a.ClientID = reg.MQTT.Username, reg.MQTT.Password, reg.MQTT.ClientID
	if a.UUID == "" || a.KeyID == "" || a.Password == "" || a.ClientID == "" {
		t.Fatalf("provision/agent answered without credentials: %+v", reg)
	}
	s.secrets = append(s.secrets, key.Key)
	return a
}

// rest sends a JSON request to the API's published port and decodes the answer.
func (s *stack) rest(t *testing.T, method, path, token string, body any, want int, into any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, s.api+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != want/100 {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

func (s *stack) options(url string, a agent) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().AddBroker(url).SetClientID(a.ClientID).SetUsername(a.Username).SetPassword(a.Password).
		SetTLSConfig(&tls.Config{RootCAs: s.ca, ServerName: "localhost"}).
		SetConnectTimeout(10 * time.Second).SetAutoReconnect(false).SetCleanSession(true)
}

func (s *stack) tryConnect(url string, a agent) error {
	c := mqtt.NewClient(s.options(url, a))
	tok := c.Connect()
	if !tok.WaitTimeout(20 * time.Second) {
		return fmt.Errorf("no CONNACK within 20 s")
	}
	if tok.Error() != nil {
		return tok.Error()
	}
	c.Disconnect(50)
	return nil
}

// connect connects an agent (the CA from init-secrets.sh, the name in the server certificate), with the
// options changed by adjust, and disconnects at the end of the test.
func (s *stack) connect(t *testing.T, url string, a agent, adjust func(*mqtt.ClientOptions)) mqtt.Client {
	t.Helper()
	o := s.options(url, a)
	if adjust != nil {
		adjust(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect %s: %v", url, a.ClientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// restartBroker: agents connected over TLS and WSS with automatic reconnection are back after `podman
// restart` of the broker's container.
func (s *stack) restartBroker(t *testing.T, agents []agent) {
	type conn struct {
		name     string
		lost     chan struct{}
		connects atomic.Int32
	}
	var conns []*conn
	for i, a := range agents {
		url := []string{s.mqtt, s.wss}[i%2]
		cn := &conn{name: a.ClientID + " over " + url, lost: make(chan struct{}, 1)}
		s.connect(t, url, a, func(o *mqtt.ClientOptions) {
			o.SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).SetConnectRetryInterval(time.Second)
			o.SetOnConnectHandler(func(mqtt.Client) { cn.connects.Add(1) })
			o.SetConnectionLostHandler(func(mqtt.Client, error) {
				select {
				case cn.lost <- struct{}{}:
				default:
				}
			})
		})
		conns = append(conns, cn)
	}
	restart := time.Now()
	s.podman("restart", "-t", "10", s.containers()["mosquitto"])
	restarted := time.Now()
	for _, cn := range conns {
		select {
		case <-cn.lost:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the session did not drop when the broker restarted", cn.name)
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for _, cn := range conns {
		for cn.connects.Load() < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not reconnected within 90 s of the restart", cn.name)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("podman restart took %v; every agent was back %v after it returned", restarted.Sub(restart).Round(10*time.Millisecond),
		time.Since(restarted).Round(10*time.Millisecond))
	s.waitHealthy("mosquitto", 2*time.Minute)
}

// revokeKicks: DELETE of the agent's key over REST closes its live session within a second, and the
// credentials no longer connect.
func (s *stack) revokeKicks(t *testing.T, token string, a agent, url string) {
	t.Helper()
	lost := make(chan time.Time, 1)
	s.connect(t, url, a, func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	})
	s.rest(t, "DELETE", "/api/v1/auth/api-keys/"+a.KeyID, token, nil, http.StatusNoContent, nil)
	answered := time.Now()
	select {
	case at := <-lost:
		t.Logf("%s: session closed %v after the REST answer", url, at.Sub(answered).Round(time.Millisecond))
	case <-time.After(time.Second):
		t.Fatalf("%s: the session is still open 1 s after the key was revoked", url)
	}
	if err := s.tryConnect(url, a); err == nil {
		t.Fatal("the revoked key connects again")
	}
}

// sourceBuiltBroker rebuilds the broker image with MOSQUITTO_VERSION (the release tarball given in
// docker/mosquitto-src/, as an offline user would), recreates the broker and checks it serves agents.
func (s *stack) sourceBuiltBroker(t *testing.T, token string, b agent) {
	src := os.Getenv("MOSQUITTO_SRC")
	if src == "" {
		src = filepath.Join(filepath.Dir(s.rootRepo(t)), "shared", "mosquitto")
	}
	tarball := filepath.Join(src, "mosquitto-"+sourceMosquitto+".tar.gz")
	data, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatalf("the Mosquitto %s source: %v (set MOSQUITTO_SRC to the directory holding mosquitto-%s.tar.gz)", sourceMosquitto, err, sourceMosquitto)
	}
	if err := os.WriteFile(filepath.Join(s.root, "docker", "mosquitto-src", filepath.Base(tarball)), data, 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"MOSQUITTO_VERSION=" + sourceMosquitto}
	if out, err := s.tryCompose(20*time.Minute, env, "build", "mosquitto"); err != nil {
		t.Fatalf("build with MOSQUITTO_VERSION=%s: %v\n%s", sourceMosquitto, err, out)
	}
	if out, err := s.tryCompose(5*time.Minute, env, "up", "-d", "--no-deps", "mosquitto"); err != nil {
		t.Fatalf("up -d mosquitto: %v\n%s", err, out)
	}
	in := s.waitHealthy("mosquitto", 3*time.Minute)
	out, _ := s.tryPodman("exec", in.ID, "mosquitto", "-h")
	if !strings.Contains(out, "mosquitto version "+sourceMosquitto) {
		t.Fatalf("the broker container runs %q, want %s", firstLine(out), sourceMosquitto)
	}
	for _, url := range []string{s.mqtt, s.wss} {
		c := s.connect(t, url, b, nil)
		c.Disconnect(100)
	}
	s.revokeKicks(t, token, b, s.wss)
}

func (s *stack) rootRepo(t *testing.T) string {
	repo, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// noSecretLeaks: the generated passwords, keys and credentials appear in no `podman inspect` of the
// containers and images, no `podman history`, no file of the built images' layers and no container log.
func (s *stack) noSecretLeaks(t *testing.T) {
	for _, sec := range s.secrets {
		if len(sec) < 16 {
			t.Fatalf("a secret needle of %d bytes: too short to scan for", len(sec))
		}
	}
	check := func(what, text string) {
		for i, sec := range s.secrets {
			if strings.Contains(text, sec) {
				t.Errorf("%s shows secret #%d", what, i)
			}
		}
	}
	for svc, id := range s.containers() {
		check(svc+"'s podman inspect", s.podman("inspect", id))
		logs := s.logs(id)
		check(svc+"'s log", logs)
		// The scan means something only if the services log: the broker's start and the kicks, the API's
		// requests, PostgreSQL's start.
		want := map[string]string{"mosquitto": "mosquitto version", "iotauth": `"msg":"request"`, "postgres": "ready to accept connections", "migrate": "schema"}[svc]
		if !strings.Contains(logs, want) {
			t.Errorf("%s's log lacks %q: the scan saw no log\n%s", svc, want, logs)
		}
	}
	for _, img := range []string{"iotauth:local", "iotauth-mosquitto:local", "postgres:15"} {
		check(img+"'s podman history", s.podman("history", "--no-trunc", img))
		check(img+"'s podman image inspect", s.podman("image", "inspect", img))
		// Every file of the image (all its layers, mounted read-only), scanned with grep -F.
		dir := strings.TrimSpace(s.podman("image", "mount", img))
		pats := filepath.Join(t.TempDir(), "needles")
		if err := os.WriteFile(pats, []byte(strings.Join(s.secrets, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("grep", "-rlIF", "--no-messages", "-f", pats, dir).Output()
		_, _ = s.tryPodman("image", "unmount", img)
		if len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("%s: files holding a generated secret: %s", img, out)
		} else if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
			t.Errorf("scan of %s: %v", img, err)
		}
	}
	// The build stages: every image the builds of this run made (cached ones were scanned when they were
	// made), its own layer's files. A secret that slipped into the build context (COPY . .) shows here.
	if found := s.scanNewImages(t, s.begin); len(found) > 0 {
		t.Errorf("image layers made by this run hold a generated secret: %v", found)
	}
	// The layer scan catches a leak through the build context: the API's build stage built with a
	// .dockerignore that lets docker/secrets/ in holds the secrets, and the scan reports them.
	t.Run("ScanCatchesContextLeak", func(t *testing.T) {
		leaky := filepath.Join(t.TempDir(), "leaky")
		copyTree(t, s.root, leaky)
		for _, d := range []string{"secrets", "certs"} {
			if out, err := exec.Command("cp", "-a", filepath.Join(s.root, "docker", d), filepath.Join(leaky, "docker", d)).CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
		}
		ignore, err := os.ReadFile(filepath.Join(leaky, ".dockerignore"))
		if err != nil {
			t.Fatal(err)
		}
		ignore = regexp.MustCompile(`(?m)^(docker/secrets/|\*\*/\*\.key|\*\*/\*\.pem)$`).ReplaceAll(ignore, nil)
		if err := os.WriteFile(filepath.Join(leaky, ".dockerignore"), ignore, 0o644); err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		tag := "localhost/iotauth-leaky:" + s.project
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if out, err := s.run(ctx, leaky, nil, "podman", "build", "-q", "--layers=false", "--target", "build", "-f", "docker/Dockerfile.iotauth", "-t", tag, "."); err != nil {
			t.Fatalf("leaky build: %v\n%s", err, out)
		}
		// No layer of it is kept (--layers=false): removing the image removes the secrets it holds.
		defer s.tryPodman("rmi", "-f", tag)
		if found := s.scanNewImages(t, before); len(found) == 0 {
			t.Fatal("a build context carrying docker/secrets went unnoticed by the layer scan")
		} else {
			t.Logf("the scan reports the leaky build: %v", found)
		}
	})
	// The scan itself finds what it looks for: a file planted in a container's layer is reported.
	id := s.containers()["mosquitto"]
	if _, err := s.tryPodman("exec", id, "bash", "-c", "printf %s \"$0\" > /tmp/planted", s.secrets[0]); err != nil {
		t.Fatal(err)
	}
	dir := strings.TrimSpace(s.podman("mount", id))
	defer s.tryPodman("unmount", id)
	out, _ := exec.Command("grep", "-rlF", "--no-messages", s.secrets[0], filepath.Join(dir, "tmp")).Output()
	if !strings.Contains(string(out), "planted") {
		t.Fatalf("the layer scan does not find a planted secret (%q)", out)
	}
}

// scanNewImages scans, in every image (intermediate ones too) created since the given instant, the files
// its own layer adds or changes, for the secrets; it returns "image:path" for each hit.
func (s *stack) scanNewImages(t *testing.T, since time.Time) []string {
	t.Helper()
	var images []struct {
		ID      string `json:"Id"`
		Created int64
	}
	if err := json.Unmarshal([]byte(s.podman("images", "-a", "--format", "json")), &images); err != nil {
		t.Fatal(err)
	}
	pats := filepath.Join(t.TempDir(), "needles")
	if err := os.WriteFile(pats, []byte(strings.Join(s.secrets, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, img := range images {
		if img.Created < since.Unix()-1 {
			continue
		}
		var diff map[string][]string
		if err := json.Unmarshal([]byte(s.podman("diff", "--format", "json", img.ID)), &diff); err != nil {
			t.Fatalf("podman diff %s: %v", img.ID, err)
		}
		paths := append(diff["added"], diff["changed"]...)
		if len(paths) == 0 {
			continue
		}
		dir := strings.TrimSpace(s.podman("image", "mount", img.ID))
		var files []string
		for _, p := range paths {
			if fi, err := os.Lstat(filepath.Join(dir, p)); err == nil && fi.Mode().IsRegular() {
				files = append(files, filepath.Join(dir, p))
			}
		}
		for len(files) > 0 {
			n := min(len(files), 500)
			out, _ := exec.Command("grep", append([]string{"-lIF", "--no-messages", "-f", pats}, files[:n]...)...).Output()
			for _, f := range strings.Fields(string(out)) {
				found = append(found, img.ID[:12]+":"+strings.TrimPrefix(f, dir))
			}
			files = files[n:]
		}
		_, _ = s.tryPodman("image", "unmount", img.ID)
	}
	return found
}

// secretNeedle is the part of a secret file scanned for: its longest line (a PEM key's base64 line, the
// password, the URL).
func secretNeedle(text string) string {
	best := ""
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); len(l) > len(best) && !strings.HasPrefix(l, "-----") {
			best = l
		}
	}
	return best
}

func randomText(t *testing.T) string {
	b := make([]byte, 24)
	f, err := os.Open("/dev/urandom")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

func firstLine(s string) string { return strings.SplitN(strings.TrimSpace(s), "\n", 2)[0] }

var skipCopy = regexp.MustCompile(`^(\.git|build)$`)

// copyTree copies the repository (less .git and build/) to dst with tar, keeping modes.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !skipCopy.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	// The user's own docker/secrets and docker/certs stay out: the test makes its own.
	args := append([]string{"-C", src, "--exclude=./docker/secrets", "--exclude=./docker/certs", "--exclude=*.tar.gz", "-cf", "-"}, prefixAll("./", names)...)
	cmd := exec.Command("bash", append([]string{"-c", `tar "$@" | tar -C "$0" -xf -`, dst}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("copy of the repository: %v\n%s", err, out)
	}
}

func prefixAll(p string, list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = p + s
	}
	return out
}
