//go:build debpkg

// Package deb_test checks the Debian package that make deb builds (docs/packaging.md) the way an
// operator uses it: installed with dpkg -i into a throwaway Debian bookworm root made by mmdebstrap, its
// iotauth run, Debian's own Mosquitto started in that root with the shipped example configuration
// pointed at a test database, an agent connected over TLS, iotauth serve run as the service's user
// with the shipped environment file, then removed (conffiles stay) and purged (they go). lintian must
// report no error and only the warnings docs/packaging.md explains. The tests need root (chroot,
// mounts); make test-deb runs them (build tag debpkg, so that make test does not).
package deb_test

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/test/harness"
)

var pg *harness.Postgres

func TestMain(m *testing.M) { os.Exit(harness.RunWithPostgres(m, &pg)) }

// Paths of the package's files, as docs/packaging.md lists them.
const (
	binPath     = "/usr/bin/iotauth"
	pluginPath  = "/usr/lib/mosquitto/iotauth.so"
	unitPath    = "/lib/systemd/system/iotauth.service"
	envPath     = "/etc/iotauth/iotauth.env"
	examplePath = "/etc/mosquitto/conf.d/iotauth.conf.example"
)

// debPath is the package under test: $IOTAUTH_DEB, which make test-deb sets to what make deb built.
func debPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("IOTAUTH_DEB")
	if p == "" {
		t.Fatal("IOTAUTH_DEB is not set: run make test-deb, which builds the package and sets it")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the package to test: %v (run make deb)", err)
	}
	return p
}

// debField reads a field of the package's control file.
func debField(t *testing.T, deb, field string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-f", deb, field).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f %s %s: %v", deb, field, err)
	}
	return strings.TrimSpace(string(out))
}

func TestControlFields(t *testing.T) {
	t.Parallel()
	deb := debPath(t)
	if got := debField(t, deb, "Package"); got != "iotauth" {
		t.Errorf("Package %q, want iotauth", got)
	}
	depends := debField(t, deb, "Depends")
	for _, want := range []string{"libc6 (>= ", "adduser"} {
		if !strings.Contains(depends, want) {
			t.Errorf("Depends %q lacks %q", depends, want)
		}
	}
	if got := debField(t, deb, "Recommends"); !strings.Contains(got, "mosquitto (>= 2.0)") {
		t.Errorf("Recommends %q, want mosquitto (>= 2.0)", got)
	}
	wantName := fmt.Sprintf("iotauth_%s_%s.deb", debField(t, deb, "Version"), debField(t, deb, "Architecture"))
	if filepath.Base(deb) != wantName {
		t.Errorf("file name %s, want %s (Debian's name for this Version and Architecture)", filepath.Base(deb), wantName)
	}
}

func TestInstallRunRemovePurge(t *testing.T) {
	t.Parallel()
	deb := debPath(t)
	version := debField(t, deb, "Version")
	r := newRoot(t)

	// Every service start or stop a maintainer script asks for (invoke-rc.d, deb-systemd-invoke) goes
	// through policy-rc.d: record them, and allow none.
	r.write("/usr/sbin/policy-rc.d", "#!/bin/sh\necho \"$*\" >>/var/log/policy-rc.d.log\nexit 101\n", 0o755)
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	r.write("/tmp/iotauth.deb", string(data), 0o644)
	r.must("dpkg", "-i", "/tmp/iotauth.deb")

	for _, p := range []string{binPath, pluginPath, unitPath, envPath, examplePath,
		"/usr/share/doc/iotauth/copyright", "/usr/share/doc/iotauth/changelog.gz"} {
		if !r.exists(p) {
			t.Errorf("%s is not installed", p)
		}
	}
	if out := r.must("iotauth", "version"); !strings.HasPrefix(out, "iotauth "+version+"\n") {
		t.Errorf("iotauth version says %q, want the package version %s first", out, version)
	}

	t.Log("the system user, the environment file's owner, the conffiles")
	checkUser(t, r)
	if got := strings.TrimSpace(r.must("stat", "-c", "%a %U %G", envPath)); got != "640 root iotauth" {
		t.Errorf("%s is %q, want 640 root iotauth", envPath, got)
	}
	conffiles := r.must("dpkg-query", "-W", "-f=${Conffiles}", "iotauth")
	for _, p := range []string{envPath, examplePath} {
		if !strings.Contains(conffiles, " "+p+" ") {
			t.Errorf("%s is not a conffile; dpkg lists:\n%s", p, conffiles)
		}
	}

	t.Log("nothing started or enabled on install")
	if b, err := os.ReadFile(r.path("/var/log/policy-rc.d.log")); err == nil && strings.Contains(string(b), "iotauth") {
		t.Errorf("a maintainer script asked to start or stop iotauth:\n%s", b)
	}
	if r.exists("/etc/systemd/system/multi-user.target.wants/iotauth.service") {
		t.Error("installing enabled iotauth.service; it must wait for the administrator")
	}
	if pids := running(r.path(binPath)); len(pids) > 0 {
		t.Errorf("iotauth runs after install (pids %v)", pids)
	}

	t.Log("the unit: systemd-analyze verify and security")
	if out, err := r.run(nil, "systemd-analyze", "verify", unitPath); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}
	// --threshold counts exposure in tenths: 0 (locked down) to 100; the unit scores 14 today, one with
	// only User= set 95.
	if out, err := r.run(nil, "systemd-analyze", "security", "--offline=true", "--threshold=20", unitPath); err != nil {
		t.Errorf("systemd-analyze security finds %s exposed beyond 2.0: %v\n%s", unitPath, err, out)
	}

	t.Log("Debian's Mosquitto with the example configuration, and an agent over TLS")
	dsn := pg.NewDatabase(t)
	port := freePort(t)
	pki := newPKI(t)
	configureBroker(t, r, dsn, port, pki)
	broker := startMosquitto(t, r, port)
	agent := createAgent(t, r, dsn)
	roundTrip(t, port, pki, agent)
	if c, err := connectTLS(port, pki, agent.Username, agent.Password+"x", agent.ClientID); err == nil {
		c.Disconnect(0)
		t.Error("a wrong MQTT password was accepted: the broker does not authenticate through the plugin")
	}

	t.Log("iotauth serve as the iotauth user, configured by the environment file")
	serveAsService(t, r, dsn)
	broker.stop(t)

	t.Log("installing again (as an upgrade does) keeps the edited environment file and its owner")
	edited, err := os.ReadFile(r.path(envPath))
	if err != nil {
		t.Fatal(err)
	}
	r.must("dpkg", "-i", "/tmp/iotauth.deb")
	if b, err := os.ReadFile(r.path(envPath)); err != nil || string(b) != string(edited) {
		t.Errorf("installing again replaced the edited %s: %v", envPath, err)
	}
	if got := strings.TrimSpace(r.must("stat", "-c", "%a %U %G", envPath)); got != "640 root iotauth" {
		t.Errorf("after installing again %s is %q, want 640 root iotauth", envPath, got)
	}

	t.Log("dpkg -r keeps the conffiles")
	r.must("dpkg", "-r", "iotauth")
	for _, p := range []string{binPath, pluginPath, unitPath} {
		if r.exists(p) {
			t.Errorf("%s is still there after dpkg -r", p)
		}
	}
	if b, err := os.ReadFile(r.path(envPath)); err != nil || string(b) != string(edited) {
		t.Errorf("dpkg -r did not keep the edited %s: %v", envPath, err)
	}
	if !r.exists(examplePath) {
		t.Errorf("dpkg -r removed the conffile %s", examplePath)
	}
	if got := r.must("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "iotauth"); strings.TrimSpace(got) != "rc" {
		t.Errorf("after dpkg -r the package is %q, want rc (removed, config files kept)", got)
	}

	t.Log("dpkg -P removes them")
	// The administrator's secrets beside the environment file go first, as an administrator purging would.
	for _, p := range []string{"/etc/iotauth/database-url", "/etc/iotauth/jwt-secret"} {
		if err := os.Remove(r.path(p)); err != nil {
			t.Fatal(err)
		}
	}
	r.must("dpkg", "-P", "iotauth")
	for _, p := range []string{envPath, examplePath, "/etc/iotauth"} {
		if r.exists(p) {
			t.Errorf("%s is still there after dpkg -P", p)
		}
	}
	if out, err := r.run(nil, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", "iotauth"); err == nil && strings.TrimSpace(out) != "" && !strings.HasPrefix(out, "un") {
		t.Errorf("after dpkg -P the package is %q, want it gone", out)
	}
	if !r.exists("/etc/mosquitto/conf.d/iotauth.conf") {
		t.Error("dpkg -P removed the administrator's own iotauth.conf, which the package never shipped")
	}
}

// checkUser checks the system user the postinst made.
func checkUser(t *testing.T, r *root) {
	t.Helper()
	out, err := r.run(nil, "getent", "passwd", "iotauth")
	if err != nil {
		t.Fatalf("no iotauth user after install: %v %s", err, out)
	}
	f := strings.Split(strings.TrimSpace(out), ":")
	if len(f) != 7 {
		t.Fatalf("getent passwd iotauth: %q", out)
	}
	if uid, _ := strconv.Atoi(f[2]); uid == 0 || uid >= 1000 {
		t.Errorf("iotauth has uid %s, want a system uid (1 to 999)", f[2])
	}
	if f[5] != "/nonexistent" || f[6] != "/usr/sbin/nologin" {
		t.Errorf("iotauth has home %s and shell %s, want /nonexistent and /usr/sbin/nologin", f[5], f[6])
	}
	if r.exists("/nonexistent") {
		t.Error("adduser made /nonexistent")
	}
	if out := r.must("id", "-gn", "iotauth"); strings.TrimSpace(out) != "iotauth" {
		t.Errorf("iotauth's group is %q, want iotauth", out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// configureBroker does what the example's comments tell an operator to do: certificates in
// /etc/mosquitto/certs, the connection string in /etc/mosquitto/iotauth.dsn, the example copied to
// iotauth.conf. Only the listener changes: a free port on loopback instead of 8883.
func configureBroker(t *testing.T, r *root, dsn string, port int, pki testPKI) {
	t.Helper()
	example, err := os.ReadFile(r.path(examplePath))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(example)
	for _, want := range []string{"\nlistener 8883\n", "\nplugin " + pluginPath + "\n", "\nplugin_opt_dsn_file /etc/mosquitto/iotauth.dsn\n", "\nallow_anonymous false\n"} {
		if !strings.Contains(conf, want) {
			t.Fatalf("%s lacks %q", examplePath, strings.TrimSpace(want))
		}
	}
	conf = strings.Replace(conf, "\nlistener 8883\n", fmt.Sprintf("\nlistener %d 127.0.0.1\n", port), 1)
	r.write("/etc/mosquitto/conf.d/iotauth.conf", conf, 0o644)
	r.write("/etc/mosquitto/certs/ca.pem", string(pki.CA), 0o644)
	r.write("/etc/mosquitto/certs/server.pem", string(pki.Cert), 0o644)
	r.write("/etc/mosquitto/certs/server.key", string(pki.Key), 0o640)
	r.write("/etc/mosquitto/iotauth.dsn", dsn+"\n", 0o640)
	r.must("chgrp", "mosquitto", "/etc/mosquitto/certs/server.key", "/etc/mosquitto/iotauth.dsn")
}

// broker is the root's Mosquitto.
type broker struct {
	cmd  *exec.Cmd
	done chan struct{}
	out  *harness.Buffer
	log  string // its log file, from the host
}

// startMosquitto starts Mosquitto as Debian's mosquitto.service does: its ExecStartPre commands, then
// its ExecStart, read from the unit in the root. It waits until the listener accepts connections.
func startMosquitto(t *testing.T, r *root, port int) *broker {
	t.Helper()
	unit, err := os.ReadFile(r.path("/lib/systemd/system/mosquitto.service"))
	if err != nil {
		t.Fatal(err)
	}
	var start []string
	for _, line := range strings.Split(string(unit), "\n") {
		if pre, ok := strings.CutPrefix(line, "ExecStartPre="); ok {
			f := strings.Fields(strings.TrimLeft(pre, "-+!@"))
			r.must(f[0], f[1:]...)
		}
		if s, ok := strings.CutPrefix(line, "ExecStart="); ok {
			start = strings.Fields(s)
		}
	}
	if len(start) == 0 {
		t.Fatal("mosquitto.service has no ExecStart")
	}
	b := &broker{out: &harness.Buffer{}, done: make(chan struct{}), log: r.path("/var/log/mosquitto/mosquitto.log")}
	b.cmd = exec.Command("chroot", append([]string{r.dir}, start...)...)
	b.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() { b.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-b.done:
			t.Fatalf("mosquitto exited at start:\n%s\n%s", b.out, b.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto does not listen on %d after 60 s:\n%s\n%s", port, b.out, b.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return b
}

func (b *broker) logText() string {
	data, _ := os.ReadFile(b.log)
	return string(data)
}

// stop ends the broker with SIGTERM (SIGKILL after 20 s); calling it again does nothing.
func (b *broker) stop(t *testing.T) {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(20 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
		t.Errorf("mosquitto did not stop on SIGTERM within 20 s:\n%s", b.logText())
	}
}

// agentCreds is what `iotauth agent create` prints.
type agentCreds struct {
	UUID     string
	Username string
	Password string
	ClientID string
}

// createAgent creates an agent with the installed CLI.
func createAgent(t *testing.T, r *root, dsn string) agentCreds {
	t.Helper()
	out, err := r.run([]string{"DATABASE_URL=" + dsn}, "iotauth", "agent", "create", "-name", "deb-test")
	if err != nil {
		t.Fatalf("iotauth agent create: %v\n%s", err, out)
	}
	var v struct {
		UUID string `json:"agentUuid"`
		MQTT struct {
			Username string `json:"username"`
			Password string `json:"password"`
			ClientID string `json:"clientId"`
		} `json:"mqtt"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.UUID == "" {
		t.Fatalf("iotauth agent create printed no agent (%v):\n%s", err, out)
	}
	return agentCreds{UUID: v.UUID, Username: v.MQTT.Username, Password: v.MQTT.Password, ClientID: v.MQTT.ClientID}
}

func connectTLS(port int, pki testPKI, user, pass, clientID string) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("ssl://127.0.0.1:%d", port)).
		SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetTLSConfig(&tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12})
	o.SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).SetCleanSession(true)
	o.SetProtocolVersion(4)
	return harness.ConnectWith(o)
}

// roundTrip connects the agent over TLS and has it receive what it publishes in its own namespace.
func roundTrip(t *testing.T, port int, pki testPKI, a agentCreds) {
	t.Helper()
	c, err := connectTLS(port, pki, a.Username, a.Password, a.ClientID)
	if err != nil {
		t.Fatalf("the agent could not connect over TLS: %v", err)
	}
	defer c.Disconnect(100)
	topic := "agents/" + a.UUID + "/deb"
	got := make(chan string, 1)
	if tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- string(m.Payload()):
		default:
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	if tok := c.Publish(topic, 1, false, "from the package"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
	select {
	case m := <-got:
		if m != "from the package" {
			t.Errorf("received %q", m)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the agent's own message did not come back within 15 s")
	}
}

// serveAsService runs iotauth serve as iotauth.service would: as the iotauth user, with the variables
// of the environment file, which names secret files the operator made root:iotauth 0640. It waits for
// /readyz to answer 200 (the database is reached), then stops the server.
func serveAsService(t *testing.T, r *root, dsn string) {
	t.Helper()
	secret := make([]byte, 48)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	r.write("/etc/iotauth/database-url", dsn+"\n", 0o640)
	r.write("/etc/iotauth/jwt-secret", base64.StdEncoding.EncodeToString(secret)+"\n", 0o640)
	r.must("chgrp", "iotauth", "/etc/iotauth/database-url", "/etc/iotauth/jwt-secret")
	port := freePort(t)
	f, err := os.OpenFile(r.path(envPath), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "\nDATABASE_URL_FILE=/etc/iotauth/database-url\nJWT_SECRET_FILE=/etc/iotauth/jwt-secret\nLISTEN_ADDR=127.0.0.1:%d\nMETRICS_ADDR=off\n", port)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	env := envFile(t, r.path(envPath))
	unit, err := os.ReadFile(r.path(unitPath))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nUser=iotauth\n") || !strings.Contains(string(unit), "\nExecStart="+binPath+" serve\n") {
		t.Fatalf("%s does not run %s serve as User=iotauth", unitPath, binPath)
	}
	cmd := exec.Command("chroot", "--userspec=iotauth:iotauth", r.dir, binPath, "serve")
	cmd.Env = append(env, "PATH=/usr/bin:/bin")
	out := &harness.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-done:
			t.Fatalf("iotauth serve exited as the iotauth user:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("iotauth serve is not ready after 60 s (%v):\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// envFile reads KEY=VALUE lines as systemd's EnvironmentFile= does for the simple case the shipped file
// uses (no quotes, no continuation lines), skipping blank lines and # or ; comments.
func envFile(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var env []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if !strings.Contains(line, "=") {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		env = append(env, line)
	}
	return env
}

// running lists the processes whose executable is exe (a path seen from the host).
func running(exe string) []int { return processesWhose("exe", exe) }
