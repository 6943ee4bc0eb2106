package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotauth/iotauth/backend/store"
)

// OpenStore opens a store on dsn, closed when the test ends.
func OpenStore(t testing.TB, dsn string) *store.Store {
	t.Helper()
	st, err := store.Open(dsn, store.PoolOptions{MaxConns: 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// Agent is a provisioned agent with its plaintext secrets.
type Agent struct {
	UUID     string
	KeyID    string
	Key      string
	Password string
	ClientID string
}

// Namespace is the agent's default topic prefix.
func (a Agent) Namespace() string { return "agents/" + a.UUID }

// CreateAgent provisions an agent directly through the store.
func CreateAgent(t testing.TB, st *store.Store, name string) Agent {
	t.Helper()
	n, err := st.Agents.CreateAgent(context.Background(), store.CreateAgentParams{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return Agent{UUID: n.AgentUUID, KeyID: n.KeyID, Key: n.APIKey.Reveal(), Password: n.MQTTPassword.Reveal(), ClientID: "agent-" + n.AgentUUID}
}

// PluginBroker starts Mosquitto with the production plugin pointed at dsn, with extra plugin options.
func PluginBroker(t testing.TB, dsn string, opts ...[2]string) *Broker {
	t.Helper()
	plugin, err := PluginPath(false)
	if err != nil {
		t.Fatal(err)
	}
	return StartBroker(t, BrokerConfig{Plugin: plugin, Options: append([][2]string{{"dsn", dsn}}, opts...)})
}

// ClientOptions are paho (MQTT 3.1.1) options for a test client.
func ClientOptions(b *Broker, user, pass, clientID string) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(clientID).SetUsername(user).SetPassword(pass)
	o.SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetCleanSession(true)
	o.SetProtocolVersion(4).SetKeepAlive(30 * time.Second).SetWriteTimeout(5 * time.Second)
	return o
}

// Connect connects a paho client and returns it, or the connect error (for a refused CONNACK,
// packets.ErrorRefusedNotAuthorised, to be compared with errors.Is).
func Connect(b *Broker, user, pass, clientID string) (mqtt.Client, error) {
	return ConnectWith(ClientOptions(b, user, pass, clientID))
}

// ConnectWith connects a paho client with the given options.
func ConnectWith(o *mqtt.ClientOptions) (mqtt.Client, error) {
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// MustConnect connects or fails the test; the client is disconnected when the test ends.
func MustConnect(t testing.TB, b *Broker, a Agent) mqtt.Client {
	t.Helper()
	c, err := Connect(b, a.Key, a.Password, a.ClientID)
	if err != nil {
		t.Fatalf("agent %s could not connect: %v", a.UUID, err)
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// CLI runs one of the mosquitto command-line clients with a bounded time and returns its combined output
// and exit code.
func CLI(t testing.TB, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(out), code
}

// CLIArgs are the connection arguments for the mosquitto command-line clients.
func CLIArgs(b *Broker, user, pass, clientID string) []string {
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(b.Port)}
	if user != "" {
		args = append(args, "-u", user)
	}
	if pass != "" {
		args = append(args, "-P", pass)
	}
	if clientID != "" {
		args = append(args, "-i", clientID)
	}
	return args
}

// BinPath is the built iotauth binary: $IOTAUTH_BIN or build/iotauth.
func BinPath() (string, error) {
	if p := os.Getenv("IOTAUTH_BIN"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := root + "/build/iotauth"
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not built: run 'make build' first", p)
	}
	return p, nil
}
