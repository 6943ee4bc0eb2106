package plugin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotauth/iotauth/test/harness"
)

func paho5(t *testing.T, b *harness.Broker, user, pass, cid string, got chan<- string) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(p paho.PublishReceived) (bool, error) {
			if got != nil {
				got <- string(p.Packet.Payload)
			}
			return true, nil
		},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: cid, Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != "", KeepAlive: 30, CleanStart: true})
	if err != nil {
		conn.Close()
		return nil, ack, err
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, ack, nil
}

// Connects, subscriptions and refusals with Eclipse paho's MQTT 5 client: SUBACK reason codes, refusal
// reason 0x87.
func TestPahoMQTT5(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.agent("v5")
	got := make(chan string, 4)
	c, _, err := paho5(t, e.b, a.Key, a.Password, a.ClientID, got)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: a.Namespace() + "/#", QoS: 1}, {Topic: "#", QoS: 1}, {Topic: "agents/+/x", QoS: 1}, {Topic: "$SYS/#", QoS: 0},
	}})
	if sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	if len(sa.Reasons) != 4 || sa.Reasons[0] != 1 || sa.Reasons[1] != 0x87 || sa.Reasons[2] != 0x87 || sa.Reasons[3] != 0x87 {
		t.Fatalf("SUBACK reasons %#v, want [0x01 0x87 0x87 0x87]", sa.Reasons)
	}
	if _, err := c.Publish(ctx, &paho.Publish{Topic: a.Namespace() + "/t", QoS: 1, Payload: []byte("v5")}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "v5" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery over MQTT 5")
	}

	_, ack, err := paho5(t, e.b, a.Key, "iotmp_wrong", a.ClientID, nil)
	if err == nil || ack == nil || ack.ReasonCode != 0x87 {
		t.Fatalf("wrong password over MQTT 5: ack %+v, err %v; want reason 0x87 Not authorized", ack, err)
	}
}

// S3 / M9: the database never holds a plaintext secret, only digests and display prefixes.
func TestDatabaseHoldsNoSecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var agents []harness.Agent
	for i := 0; i < 3; i++ {
		a := e.agent("a")
		agents = append(agents, a)
		harness.MustConnect(t, e.b, a)
	}
	e.iotauthCLI("agent", "rotate-password", agents[0].UUID)
	bin, err := harness.PostgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(filepath.Join(bin, "pg_dump"), "--data-only", e.dsn)
	if err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	if secretPattern.MatchString(out) || containsSecret(out, agents...) {
		t.Fatal("the database dump holds a plaintext secret")
	}
	if !regexp.MustCompile(`iotsk_live_[0-9A-Za-z]{8}\b`).MatchString(out) {
		t.Fatal("display prefixes missing from the dump: is the test looking at the right database?")
	}
}

// secretPattern matches any whole iotauth secret.
var secretPattern = regexp.MustCompile(`(iot[sa]k_(live|test)_|iotmp_|prov_)[0-9A-Za-z]{38}`)

// M1: production brokers listen with TLS (8883 in the docs); the plugin works the same behind it and
// anonymous clients are still refused.
func TestTLSListener(t *testing.T) {
	t.Parallel()
	// Mosquitto drops root for the mosquitto user: the files must be reachable by it.
	dir, err := os.MkdirTemp("", "iotauth-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	caPEM := writeTestPKI(t, dir)
	port, _ := harness.FreePort()
	dsn := pg.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	plugin, _ := harness.PluginPath(false)
	b := harness.StartBroker(t, harness.BrokerConfig{Plugin: plugin, Options: [][2]string{{"dsn", dsn}}, Extra: []string{
		"listener " + strconv.Itoa(port) + " 127.0.0.1",
		"cafile " + filepath.Join(dir, "ca.pem"), "certfile " + filepath.Join(dir, "server.pem"), "keyfile " + filepath.Join(dir, "server.key"),
		"tls_version tlsv1.2",
	}})
	a := harness.CreateAgent(t, st, "tls")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	o := harness.ClientOptions(b, a.Key, a.Password, a.ClientID)
	o.Servers = nil
	o.AddBroker("ssl://127.0.0.1:" + strconv.Itoa(port)).SetTLSConfig(tlsCfg)
	c, err := harness.ConnectWith(o)
	if err != nil {
		t.Fatalf("agent over TLS: %v", err)
	}
	ec := subscribeEcho(t, c, a)
	if _, err := ec.roundTrip(t, c, a, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Disconnect(10)
	o = harness.ClientOptions(b, "", "", a.ClientID)
	o.Servers = nil
	o.AddBroker("ssl://127.0.0.1:" + strconv.Itoa(port)).SetTLSConfig(tlsCfg)
	_, err = harness.ConnectWith(o)
	refused(t, err, "anonymous over TLS")
}

func writeTestPKI(t *testing.T, dir string) []byte {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "iotauth test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.pem":     caPEM,
		"server.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	for name, data := range files {
		// Mosquitto may run as the mosquitto user after dropping root: the key must be readable to it.
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return caPEM
}
