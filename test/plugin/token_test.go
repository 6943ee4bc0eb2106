package plugin_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/golang-jwt/jwt/v5"

	"github.com/iotauth/iotauth/backend/core/mqttcred"
	"github.com/iotauth/iotauth/test/harness"
)

// tokenKeys is a signing key pair for short-lived MQTT credentials, its public half in a PEM file the
// broker reads (world-readable: Mosquitto started as root reads it as the mosquitto user).
type tokenKeys struct {
	iss  *mqttcred.Issuing
	priv ed25519.PrivateKey
	path string
}

func newTokenKeys(t *testing.T) tokenKeys {
	t.Helper()
	priv, path := harness.TokenKeys(t)
	return tokenKeys{iss: mqttcred.NewIssuing(priv, nil), priv: priv, path: path}
}

// issue mints a credential the way the token exchange does.
func (k tokenKeys) issue(t *testing.T, g mqttcred.Grant) mqttcred.Credential {
	t.Helper()
	c, err := k.iss.Issue(g)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grant is a credential request with the given source subjects and topics ("access pattern" each).
func grant(prefix string, from []string, topics ...string) mqttcred.Grant {
	g := mqttcred.Grant{Subject: from[len(from)-1], ClientIDPrefix: prefix, From: from}
	for _, s := range topics {
		access, pattern, _ := strings.Cut(s, " ")
		g.Topics = append(g.Topics, mqttcred.Topic{Access: access, Pattern: pattern})
	}
	return g
}

// tokenID makes a token id of the issued shape (22 base62 characters).
func tokenID(t *testing.T) string {
	t.Helper()
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 22)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(62))
		if err != nil {
			t.Fatal(err)
		}
		b[i] = base62[n.Int64()]
	}
	return string(b)
}

// claims builds a credential's claims by hand, for what Issue will not make (lifetimes under a minute,
// forgeries).
func claims(id string, iat, exp time.Time, g mqttcred.Grant) mqttcred.Claims {
	return mqttcred.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: mqttcred.Issuer, Subject: g.Subject, Audience: jwt.ClaimStrings{mqttcred.Audience},
			IssuedAt: jwt.NewNumericDate(iat), NotBefore: jwt.NewNumericDate(iat), ExpiresAt: jwt.NewNumericDate(exp), ID: id},
		ClientIDPrefix: g.ClientIDPrefix, Topics: g.Topics, From: g.From,
	}
}

// sign signs claims with method and key, with the credential's typ header.
func sign(t *testing.T, method jwt.SigningMethod, key any, c mqttcred.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	tok.Header["typ"] = mqttcred.TokenType
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwsPattern finds a compact JWS (header and claims are base64url JSON objects).
var jwsPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.`)

// tokenEnv is newEnv with the broker accepting credentials signed by keys; it waits for the deny list
// to be loaded, and checks when the test ends that no signed token reached the broker's log.
func tokenEnv(t *testing.T, keys tokenKeys, opts ...[2]string) *env {
	t.Helper()
	e := newEnv(t, append([][2]string{{"mqtt_token_public_key", keys.path}}, opts...)...)
	waitDenyList(t, e.b)
	t.Cleanup(func() { noJWSInLog(t, e.b) })
	return e
}

func waitDenyList(t *testing.T, b *harness.Broker) {
	t.Helper()
	if !b.WaitLog("subject deny list loaded", 15*time.Second) {
		t.Fatal("the plugin did not load the subject deny list")
	}
}

// noJWSInLog is T3 (docs/security.md): a credential's password (its signed token) never reaches the log.
func noJWSInLog(t *testing.T, b *harness.Broker) {
	t.Helper()
	if m := jwsPattern.FindString(b.Log()); m != "" {
		t.Errorf("the broker's log holds a signed token (%s…)", m[:12])
	}
}

// watchToken connects with a credential and returns the client and a channel that receives the time the
// connection was lost.
func watchToken(t *testing.T, b *harness.Broker, user, pass, clientID string) (mqtt.Client, <-chan time.Time) {
	t.Helper()
	lost := make(chan time.Time, 1)
	o := harness.ClientOptions(b, user, pass, clientID)
	o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	c, err := harness.ConnectWith(o)
	if err != nil {
		t.Fatalf("connect with a short-lived credential as %s: %v", clientID, err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, lost
}

// TestTokenTopics is short-lived credentials on the broker (docs/security.md, T3, A2): a short-lived credential connects with
// its iotmq_ username and signed password, gets exactly its topics (subscriptions only as subsets of
// read grants, no # or $SYS, no publish outside write grants), and its session carries the name
// iotauth-token:<id> in the broker's log, never the token.
func TestTokenTopics(t *testing.T) {
	t.Parallel()
	keys := newTokenKeys(t)
	e := tokenEnv(t, keys)
	a := e.agent("sensor")
	cred := keys.issue(t, grant("dash-", []string{"app:k1", "user:u1"}, "read agents/+/telemetry", "write agents/+/cmd"))

	agentMsgs := make(chan string, 10)
	ac := harness.MustConnect(t, e.b, a)
	if codes := subscribeCodes(t, ac, []string{a.Namespace() + "/cmd"}, agentMsgs); codes[a.Namespace()+"/cmd"] >= 0x80 {
		t.Fatal("the agent's own command subscription was refused")
	}
	msgs := make(chan string, 10)
	c, _ := watchToken(t, e.b, cred.Username, cred.Password, "dash-tab1")
	codes := subscribeCodes(t, c, []string{"agents/+/telemetry", "agents/" + a.UUID + "/telemetry",
		"$share/g/agents/+/telemetry", "agents/#", "#", "+/+/telemetry", "agents/+/cmd", "$SYS/#", "agents/+/state"}, msgs)
	for f, code := range codes {
		want := f == "agents/+/telemetry" || f == "agents/"+a.UUID+"/telemetry" || f == "$share/g/agents/+/telemetry"
		if granted := code < 0x80; granted != want {
			t.Errorf("SUBSCRIBE %q: code %#x, want granted=%v", f, code, want)
		}
	}
	publish(t, ac, a.Namespace()+"/telemetry", "21.5")
	expectCopies(t, msgs, a.Namespace()+"/telemetry 21.5")
	publish(t, ac, a.Namespace()+"/state", "private")
	expectNone(t, msgs, 300*time.Millisecond, "agent state to the credential")

	publish(t, c, a.Namespace()+"/cmd", "reboot")
	expectMessage(t, agentMsgs, a.Namespace()+"/cmd reboot")
	publish(t, c, a.Namespace()+"/state", "forged") // no write grant
	publish(t, c, a.Namespace()+"/telemetry", "forged")
	expectNone(t, msgs, 500*time.Millisecond, "a publish outside the credential's write grants")

	// mosquitto_sub with the same credential: a refused subscription is reported as such.
	out, code := harness.CLI(t, "mosquitto_sub", append(harness.CLIArgs(e.b, cred.Username, cred.Password, "dash-cli"),
		"-t", "#", "-C", "1", "-W", "2")...)
	if !strings.Contains(out, "All subscription requests were denied") {
		t.Errorf("mosquitto_sub -t '#' with a credential: exit %d, %q", code, out)
	}
	// A large credential (20 long topics, a password of some 3 KB) passes the shim and the plugin whole.
	var many []string
	for i := range 20 {
		many = append(many, fmt.Sprintf("read fleet/%02d/%s/+/telemetry", i, strings.Repeat("x", 80)))
	}
	big := keys.issue(t, grant("dash-", []string{"user:u1"}, many...))
	if len(big.Password) < 2500 {
		t.Fatalf("the large credential is only %d bytes", len(big.Password))
	}
	bc, _ := watchToken(t, e.b, big.Username, big.Password, "dash-big")
	f := "fleet/19/" + strings.Repeat("x", 80) + "/+/telemetry"
	if code := subscribeCodes(t, bc, []string{f}, msgs)[f]; code >= 0x80 {
		t.Errorf("the large credential's last topic was refused (%#x)", code)
	}
	log := e.b.Log()
	if !strings.Contains(log, "iotauth-token:"+strings.TrimPrefix(cred.Username, mqttcred.UsernamePrefix)) {
		t.Error("the broker log does not name the session iotauth-token:<id>")
	}
	if strings.Contains(log, cred.Password) {
		t.Error("the broker log holds the credential's password")
	}
}

// TestTokenRefusals: everything but a credential signed by the configured key, for its own username,
// unexpired, with a client id under its prefix that is not an agent's, is refused with CONNACK "not
// authorised"; refusals of well-signed credentials are audited with the token's subject as the actor.
func TestTokenRefusals(t *testing.T) {
	t.Parallel()
	keys := newTokenKeys(t)
	other := newTokenKeys(t)
	e := tokenEnv(t, keys)
	g := grant("web-", []string{"user:u7"}, "read agents/+/telemetry")
	cred := keys.issue(t, g)
	another := keys.issue(t, g)
	now := time.Now()
	id := tokenID(t)
	user := mqttcred.UsernamePrefix + id
	good := sign(t, jwt.SigningMethodEdDSA, keys.priv, claims(id, now, now.Add(time.Hour), g))
	if err := connectOnce(t, e.b, user, good, "web-control"); err != nil {
		t.Fatalf("the hand-signed control credential was refused: %v", err)
	}
	parts := strings.Split(good, ".")
	wider := claims(id, now, now.Add(time.Hour), grant("web-", []string{"user:u7"}, "readwrite #"))
	raw, err := json.Marshal(wider)
	if err != nil {
		t.Fatal(err)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + parts[2]
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(id, now, now.Add(time.Hour), g)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := os.ReadFile(keys.path)

	cases := []struct{ name, user, pass, clientID string }{
		{"client id outside the prefix", cred.Username, cred.Password, "dash-1"},
		{"an agent's client id", cred.Username, cred.Password, "agent-" + tokenID(t)},
		{"the prefix alone", cred.Username, cred.Password, "web-"},
		{"signed by another key", user, sign(t, jwt.SigningMethodEdDSA, other.priv, claims(id, now, now.Add(time.Hour), g)), "web-1"},
		{"expired past the leeway", user, sign(t, jwt.SigningMethodEdDSA, keys.priv, claims(id, now.Add(-time.Hour), now.Add(-2*time.Minute), g)), "web-1"},
		{"expired within the leeway", user, sign(t, jwt.SigningMethodEdDSA, keys.priv, claims(id, now.Add(-time.Hour), now.Add(-time.Second), g)), "web-1"},
		{"tampered claims", user, tampered, "web-1"},
		{"another token's username", another.Username, cred.Password, "web-1"},
		{"alg none", user, none, "web-1"},
		{"HS256 keyed with the public key", user, sign(t, jwt.SigningMethodHS256, pubDER, claims(id, now, now.Add(time.Hour), g)), "web-1"},
		{"HS256 keyed with the raw public key", user, sign(t, jwt.SigningMethodHS256, []byte(keys.iss.PublicKey()), claims(id, now, now.Add(time.Hour), g)), "web-1"},
		{"garbage", user, "not.a.token", "web-1"},
		{"no password", cred.Username, "", "web-1"},
	}
	for _, c := range cases {
		refused(t, connectOnce(t, e.b, c.user, c.pass, c.clientID), c.name)
	}
	// mosquitto_pub is refused the same way (exit 5, "not authorised").
	out, code := harness.CLI(t, "mosquitto_pub", append(harness.CLIArgs(e.b, cred.Username, cred.Password, "agent-x"), "-t", "x", "-m", "y")...)
	if code != 5 || !strings.Contains(out, "not authorised") {
		t.Errorf("mosquitto_pub with an agent's client id: exit %d, %q", code, out)
	}
	if !e.b.Alive() {
		t.Fatal("broker died")
	}
	// Well-signed credentials refused for their client id are audited, with the subject as the actor.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		var detail string
		if err := harness.QueryRow(t, e.dsn, `SELECT count(*), coalesce(string_agg(detail::text, ' '), '') FROM audit_events
			WHERE action = 'mqtt_token_refused' AND actor = 'user:u7' AND outcome = 'failure' AND detail ->> 'via' = 'mqtt'`).Scan(&n, &detail); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(detail, "eyJ") {
			t.Fatal("an audit event holds a signed token")
		}
		if n >= 4 { // three client ids and mosquitto_pub's
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d refused credential connects audited, want 4", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTokensOffWithoutKey: a broker without plugin_opt_mqtt_token_public_key refuses iotmq_ usernames
// and says why, once.
func TestTokensOffWithoutKey(t *testing.T) {
	t.Parallel()
	keys := newTokenKeys(t)
	e := newEnv(t)
	cred := keys.issue(t, grant("web-", []string{"user:u1"}, "read a/b"))
	for i := 0; i < 3; i++ {
		refused(t, connectOnce(t, e.b, cred.Username, cred.Password, "web-1"), "credential without a configured key")
	}
	if !e.b.WaitLog("short-lived credential presented but plugin_opt_mqtt_token_public_key is not set", 5*time.Second) {
		t.Fatal("no log line says why credentials are refused")
	}
	noJWSInLog(t, e.b)
}

// TestTokenExpiryCloses: a live session ends when its credential expires (the requirement is within 1 s;
// asserted within 3 s for a loaded machine), and an ended session's will is not published.
func TestTokenExpiryCloses(t *testing.T) {
	t.Parallel()
	keys := newTokenKeys(t)
	e := tokenEnv(t, keys)
	g := grant("web-", []string{"user:u2"}, "readwrite web/status")
	now := time.Now()
	exp := now.Add(3 * time.Second).Truncate(time.Second) // JWT times are whole seconds
	id := tokenID(t)
	pass := sign(t, jwt.SigningMethodEdDSA, keys.priv, claims(id, now, exp, g))

	watcher := keys.issue(t, g)
	wc, _ := watchToken(t, e.b, watcher.Username, watcher.Password, "web-watcher")
	wills := make(chan string, 4)
	if code := subscribeCodes(t, wc, []string{"web/status"}, wills)["web/status"]; code >= 0x80 {
		t.Fatalf("the will watcher's subscription was refused (%#x)", code)
	}

	lost := make(chan time.Time, 1)
	o := harness.ClientOptions(e.b, mqttcred.UsernamePrefix+id, pass, "web-short")
	o.SetWill("web/status", "gone", 1, false)
	o.SetConnectionLostHandler(func(mqtt.Client, error) { lost <- time.Now() })
	c, err := harness.ConnectWith(o)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Disconnect(10)
	at := closedBy(t, lost, time.Until(exp)+5*time.Second, "the session of an expired credential")
	if d := at.Sub(exp); d < 0 || d > 3*time.Second {
		t.Errorf("closed %v after the expiry, want within 1 s (3 s allowed here)", d)
	}
	t.Logf("closed %v after the expiry", at.Sub(exp))
	expectNone(t, wills, 500*time.Millisecond, "the will of an expired credential's session")
	refused(t, connectOnce(t, e.b, mqttcred.UsernamePrefix+id, pass, "web-short"), "reconnect with an expired credential")
}

// TestTokenDenials is A4 (docs/security.md) for short-lived credentials: iotauth_deny() in SQL and revoking the
// application key a credential derives from close every derived live session on both brokers sharing the
// database (within 1 s; asserted within 3 s), reconnects are refused, other subjects' sessions stay, and
// a credential issued after the denial's second works.
func TestTokenDenials(t *testing.T) {
	t.Parallel()
	keys := newTokenKeys(t)
	e := tokenEnv(t, keys)
	second := harness.PluginBroker(t, e.dsn, [2]string{"mqtt_token_public_key", keys.path})
	waitDenyList(t, second)
	t.Cleanup(func() { noJWSInLog(t, second) })

	tests := []struct {
		name   string
		deny   func(subject string)
		source func() string // the subject to derive from
	}{
		{"iotauth_deny in SQL", func(s string) { e.exec(`SELECT iotauth_deny($1, 't')`, s) }, func() string { return "pk:" + tokenID(t) }},
		{"application key revoked in SQL", func(s string) {
			e.exec(`UPDATE app_keys SET revoked_at = now() WHERE id = $1::uuid`, strings.TrimPrefix(s, "app:"))
		}, func() string { return "app:" + e.appKey("exchanger", time.Time{}, "read agents/+/telemetry").ID }},
		{"user disabled in SQL", func(s string) {
			e.exec(`UPDATE users SET disabled = true WHERE id = $1::uuid`, strings.TrimPrefix(s, "user:"))
		}, func() string { return "user:" + e.user(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.source()
			cred := keys.issue(t, grant("web-", []string{src, "user:someone"}, "read agents/+/telemetry", "readwrite web/status"))
			bystander := keys.issue(t, grant("web-", []string{"app:" + tokenID(t), "user:someone"}, "read agents/+/telemetry", "readwrite web/status"))
			// The derived session on broker 1 has a will: a kicked session's will is not published.
			lost1 := make(chan time.Time, 1)
			o := harness.ClientOptions(e.b, cred.Username, cred.Password, "web-a")
			o.SetWill("web/status", "web-a gone", 1, false)
			o.SetConnectionLostHandler(func(mqtt.Client, error) { lost1 <- time.Now() })
			c1, err := harness.ConnectWith(o)
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Disconnect(10)
			_, lost2 := watchToken(t, second, cred.Username, cred.Password, "web-b")
			bc, lostBy := watchToken(t, e.b, bystander.Username, bystander.Password, "web-bystander")
			wills := make(chan string, 2)
			if code := subscribeCodes(t, bc, []string{"web/status"}, wills)["web/status"]; code >= 0x80 {
				t.Fatalf("the will watcher's subscription was refused (%#x)", code)
			}
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			tt.deny(src)
			for i, lost := range []<-chan time.Time{lost1, lost2} {
				at := closedBy(t, lost, 5*time.Second, fmt.Sprintf("derived session on broker %d", i+1))
				if d := at.Sub(start); d > 3*time.Second {
					t.Errorf("broker %d closed the derived session after %v, want within 1 s (3 s allowed here)", i+1, d)
				}
				t.Logf("broker %d closed the derived session %v after the denial", i+1, at.Sub(start))
			}
			expectNone(t, wills, 300*time.Millisecond, "the will of a session closed by a denial")
			for _, b := range []*harness.Broker{e.b, second} {
				refused(t, connectOnce(t, b, cred.Username, cred.Password, "web-again"), "reconnect after "+tt.name)
			}
			select {
			case <-lostBy:
				t.Fatal("a credential of other subjects was closed")
			default:
			}
			// A credential issued after the denial's second is not affected by it (the exchange refuses
			// to issue for a revoked key or disabled user; the deny list only looks at time).
			var deniedAt time.Time
			if err := harness.QueryRow(t, e.dsn, `SELECT denied_at FROM subject_denials WHERE subject = $1`, src).Scan(&deniedAt); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(deniedAt.Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
			fresh := keys.issue(t, grant("web-", []string{src}, "read agents/+/telemetry"))
			for _, b := range []*harness.Broker{e.b, second} {
				if err := connectOnce(t, b, fresh.Username, fresh.Password, "web-fresh"); err != nil {
					t.Fatalf("a credential issued after the denial was refused: %v", err)
				}
			}
		})
	}
}

// user creates an operator account in SQL and returns its id.
func (e *env) user(t *testing.T) string {
	t.Helper()
	var id string
	if err := harness.QueryRow(t, e.dsn, `INSERT INTO users (email, password_hash, role) VALUES ($1, 'x', 'operator') RETURNING id::text`,
		tokenID(t)+"@example.com").Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestTokenConnectsNeedNoDatabase: a credential connects with PostgreSQL paused (SIGSTOP), and 50
// connects cause no statement at all in the database (pg_stat_statements, everything this database ran
// but presence's batched session records, written off the connect path: docs/presence.md), while the
// same count sees the one query of an uncached agent key (the method's control).
func TestTokenConnectsNeedNoDatabase(t *testing.T) {
	t.Parallel()
	p := privatePostgres(t)
	keys := newTokenKeys(t)
	dsn := p.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	e := &env{t: t, dsn: dsn, st: st}
	e.b = harness.PluginBroker(t, dsn, [2]string{"mqtt_token_public_key", keys.path}, [2]string{"resync_interval", "1h"})
	waitDenyList(t, e.b)
	t.Cleanup(func() { noJWSInLog(t, e.b) })
	cred := keys.issue(t, grant("web-", []string{"user:u3"}, "readwrite web/echo"))

	statements := func() int64 {
		t.Helper()
		var n int64
		if err := harness.QueryRow(t, dsn, `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
			WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			  AND query NOT LIKE '%pg_stat_statements%'
			  AND query NOT LIKE '%presence_%'`).Scan(&n); err != nil {
			t.Fatalf("count statements (needs pg_stat_statements): %v", err)
		}
		return n
	}
	// Let the start's background work (LISTEN, preload, deny list) settle.
	time.Sleep(500 * time.Millisecond)
	before := statements()
	for i := 0; i < 50; i++ {
		if err := connectOnce(t, e.b, cred.Username, cred.Password, fmt.Sprintf("web-%d", i)); err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
	}
	if n := statements() - before; n != 0 {
		t.Errorf("50 connects with a short-lived credential ran %d statements in the database, want 0", n)
	}
	// Control: an agent created now is not cached, so its connect runs one lookup, which the count sees.
	a := harness.CreateAgent(t, st, "control")
	time.Sleep(300 * time.Millisecond) // its NOTIFY is handled
	before = statements()
	if err := connectOnce(t, e.b, a.Key, a.Password, a.ClientID); err != nil {
		t.Fatal(err)
	}
	if n := statements() - before; n < 1 {
		t.Fatalf("the control connect of an uncached agent ran %d statements: the count sees nothing", n)
	}

	p.Pause()
	defer p.Resume()
	start := time.Now()
	c, _ := watchToken(t, e.b, cred.Username, cred.Password, "web-paused")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the connect took %v with PostgreSQL paused", d)
	}
	echo := make(chan string, 4)
	subscribeCodes(t, c, []string{"web/echo"}, echo)
	publish(t, c, "web/echo", "while paused")
	expectMessage(t, echo, "web/echo while paused")
	refused(t, connectOnce(t, e.b, cred.Username, cred.Password, "other-1"), "a wrong client id while paused")
	p.Resume()
	if !e.b.Alive() {
		t.Fatal("broker died")
	}
}

// TestTokenReloadReadsKeys: SIGHUP re-reads the key file (rotation without a restart), live credential
// sessions survive the re-check of every client, and a client cannot present iotauth-token:<id> itself.
func TestTokenReloadReadsKeys(t *testing.T) {
	t.Parallel()
	keys := newTokenKeys(t)
	next := newTokenKeys(t)
	e := tokenEnv(t, keys)
	g := grant("web-", []string{"user:u4"}, "read a/#")
	cred := keys.issue(t, g)
	_, lost := watchToken(t, e.b, cred.Username, cred.Password, "web-live")
	rotated := next.issue(t, g)
	refused(t, connectOnce(t, e.b, rotated.Username, rotated.Password, "web-2"), "a key not yet configured")

	a, _ := os.ReadFile(keys.path)
	b, _ := os.ReadFile(next.path)
	if err := os.WriteFile(keys.path, append(a, b...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !e.b.WaitLog("MQTT credential public keys read", 10*time.Second) {
		t.Fatal("SIGHUP did not re-read the key file")
	}
	if err := connectOnce(t, e.b, rotated.Username, rotated.Password, "web-3"); err != nil {
		t.Fatalf("a credential of the added key was refused after SIGHUP: %v", err)
	}
	stillOpenAfter(t, lost, time.Second, "a live credential session across SIGHUP")
	id := strings.TrimPrefix(cred.Username, mqttcred.UsernamePrefix)
	refused(t, connectOnce(t, e.b, "iotauth-token:"+id, cred.Password, "web-4"), "presenting the plugin's own session name")
}
