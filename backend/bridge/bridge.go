// Package bridge holds iotauth's own MQTT session to the broker for the REST publish bridge (docs/publish-bridge.md;
// docs/security.md, B1): an Eclipse paho (MQTT 5, autopaho) connection that reconnects by itself, logs in with
// a service credential the bridge issues for itself (an application key with no REST rights and a write
// grant on "#"), renews that credential by rotation before it expires, bounds concurrent publishes, and
// revokes its credential on a clean shutdown. Plaintext credentials live only in this process's memory.
// The REST handler sees only Publish and the sentinel errors below.
package bridge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/core/topicfilter"
)

// Errors of Publish. The REST handler maps each to one answer.
var (
	// ErrUnavailable: no connection to the broker now (down, unreachable, refusing the bridge's login,
	// or the bridge is stopping). Nothing was published; retry later.
	ErrUnavailable = errors.New("the MQTT broker is not reachable from the publish bridge")
	// ErrTimeout: the publish was handed to the broker but its PUBACK did not come in time; the message
	// may or may not have been delivered.
	ErrTimeout = errors.New("the broker did not acknowledge the publish in time")
	// ErrBusy: every in-flight slot stayed taken until the deadline; nothing was published.
	ErrBusy = errors.New("too many publishes are in flight on the publish bridge")
	// ErrRefused: the broker answered the publish with a failure reason code (for example 0x87 not
	// authorized, 0x97 quota exceeded).
	ErrRefused = errors.New("the broker refused the publish")
	// ErrTopic: the topic is not one iotauth publishes to (topicfilter.CheckTopic: empty, longer than
	// topicfilter.MaxLen, a wildcard, a $ topic or a NUL); nothing was sent. The error wraps the
	// topicfilter error that says which.
	ErrTopic = errors.New("the topic is not one the publish bridge may publish to")
)

// Credential is a service credential the bridge logs in with: an application key and its MQTT
// password, valid until ExpiresAt.
type Credential struct {
	ID        string
	Username  secret.Secret
	Password  secret.Secret
	ExpiresAt time.Time
}

// Issuer makes and revokes the bridge's own credentials (StoreIssuer does it in PostgreSQL).
type Issuer interface {
	Issue(ctx context.Context, ttl time.Duration) (Credential, error)
	Revoke(ctx context.Context, id string) error
}

// Config configures a Bridge. BrokerURL and Issuer are required.
type Config struct {
	// BrokerURL is the broker to publish to: tcp:// or mqtt:// (plain), mqtts://, ssl:// or tls://
	// (TLS), ws:// or wss:// (WebSockets). It carries no user info: the bridge logs in with its own key.
	BrokerURL string
	// TLS configures TLS for mqtts/ssl/tls/wss URLs (default: the system's roots, the URL's host name).
	TLS *tls.Config
	// Issuer issues the service credential.
	Issuer Issuer
	// KeyTTL is the service credential's lifetime (default 24 h); it is replaced when two thirds of it
	// have passed.
	KeyTTL time.Duration
	// MaxInFlight bounds concurrent publishes (default 100); a publish waits for a slot until its
	// context ends (ErrBusy).
	MaxInFlight int
	// ClientIDPrefix starts every client id the bridge uses (default "iotauth-bridge-<host>"); a random
	// suffix follows, so that a rotated session never takes over the one it replaces. Never "agent-".
	ClientIDPrefix string
	// Logger receives connection events (never credentials). Default: discard.
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ParseBrokerURL checks a PUBLISH_BROKER_URL value and returns it parsed.
func ParseBrokerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return nil, errors.New("the publish broker URL is not a URL like tcp://127.0.0.1:1883 or mqtts://broker.example.com:8883")
	}
	switch strings.ToLower(u.Scheme) {
	case "tcp", "mqtt", "mqtts", "ssl", "tls", "ws", "wss":
	default:
		return nil, fmt.Errorf("publish broker URL scheme %q is not supported: use tcp, mqtt, mqtts, ssl, tls, ws or wss", u.Scheme)
	}
	if u.User != nil {
		return nil, errors.New("the publish broker URL must not carry a user name or password: the bridge logs in with an application key it creates for itself")
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("publish broker URL %q has no port: add one (1883 plain, 8883 TLS)", u.Redacted())
	}
	return u, nil
}

// session is one connection with the credential it logs in with.
type session struct {
	cm       *autopaho.ConnectionManager
	cred     Credential
	cancel   context.CancelFunc
	inflight sync.WaitGroup
	up       atomic.Bool
}

// Bridge is the publish bridge's MQTT side. Build it with New, then Start it; Close ends it.
type Bridge struct {
	cfg   Config
	url   *url.URL
	log   *slog.Logger
	slots chan struct{}

	cur     atomic.Pointer[session]
	mu      sync.Mutex // serialises session changes (rotation, close)
	closed  bool
	stop    chan struct{}
	done    chan struct{}
	refused chan struct{} // the broker refused our login: rotate early
}

// New checks cfg and builds a Bridge (not yet connected).
func New(cfg Config) (*Bridge, error) {
	u, err := ParseBrokerURL(cfg.BrokerURL)
	if err != nil {
		return nil, err
	}
	if cfg.Issuer == nil {
		return nil, errors.New("bridge: an Issuer is required")
	}
	if cfg.KeyTTL <= 0 {
		cfg.KeyTTL = 24 * time.Hour
	}
	if cfg.KeyTTL < time.Minute {
		return nil, errors.New("the publish bridge's key lifetime must be at least a minute")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 100
	}
	if cfg.ClientIDPrefix == "" {
		cfg.ClientIDPrefix = "iotauth-bridge-" + Hostname()
	}
	if strings.HasPrefix(cfg.ClientIDPrefix, "agent-") || strings.ContainsAny(cfg.ClientIDPrefix, "+#/") {
		return nil, errors.New("the publish bridge's client id may not start with agent- or contain + # /")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.TLS.ServerName == "" {
		cfg.TLS = cfg.TLS.Clone()
		cfg.TLS.ServerName = u.Hostname()
	}
	return &Bridge{cfg: cfg, url: u, log: cfg.Logger, slots: make(chan struct{}, cfg.MaxInFlight),
		stop: make(chan struct{}), done: make(chan struct{}), refused: make(chan struct{}, 1)}, nil
}

// Hostname is this machine's name as a client id may carry it (letters, digits, '-', '.', '_'; at
// most 40 characters).
func Hostname() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			return r
		}
		return -1
	}, h)
	if h == "" {
		h = "host"
	}
	if len(h) > 40 {
		h = h[:40]
	}
	return h
}

// Start issues the first credential and starts connecting (in the background: a broker that is down
// at start makes publishes answer ErrUnavailable until it is up). It fails only when no credential can
// be issued (the database is down).
func (b *Bridge) Start(ctx context.Context) error {
	s, err := b.newSession(ctx)
	if err != nil {
		return err
	}
	b.cur.Store(s)
	go b.rotateLoop()
	return nil
}

// newSession issues a credential and starts a connection manager with it.
func (b *Bridge) newSession(ctx context.Context) (*session, error) {
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cred, err := b.cfg.Issuer.Issue(ictx, b.cfg.KeyTTL)
	if err != nil {
		return nil, fmt.Errorf("issue the publish bridge's own application key: %w", err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	clientID := b.cfg.ClientIDPrefix + "-" + hex.EncodeToString(suffix)
	s := &session{cred: cred}
	sctx, scancel := context.WithCancel(context.Background())
	s.cancel = scancel
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{b.url},
		TlsCfg:                        b.cfg.TLS,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         0,
		ReconnectBackoff:              autopaho.NewExponentialBackoff(200*time.Millisecond, 5*time.Second, 500*time.Millisecond, 2),
		ConnectTimeout:                5 * time.Second,
		ConnectUsername:               cred.Username.Reveal(),
		ConnectPassword:               []byte(cred.Password.Reveal()),
		OnConnectionUp: func(_ *autopaho.ConnectionManager, _ *paho.Connack) {
			s.up.Store(true)
			b.log.Info("publish bridge connected to the broker", "broker", b.url.Redacted(), "clientId", clientID, "appKey", cred.ID)
		},
		OnConnectionDown: func() bool {
			s.up.Store(false)
			if b.cur.Load() == s {
				b.log.Warn("publish bridge lost its broker connection; reconnecting (publishes answer 503 meanwhile)", "broker", b.url.Redacted())
			}
			return true
		},
		OnConnectError: func(err error) {
			var ce *autopaho.ConnackError
			if errors.As(err, &ce) && (ce.ReasonCode == 0x86 || ce.ReasonCode == 0x87 || ce.ReasonCode == 0x8C) && b.cur.Load() == s {
				b.log.Warn("the broker refused the publish bridge's login (its key was revoked or has expired?); issuing a new key", "reasonCode", ce.ReasonCode)
				select {
				case b.refused <- struct{}{}:
				default:
				}
				return
			}
			if b.cur.Load() == s {
				b.log.Warn("publish bridge cannot reach the broker; retrying", "broker", b.url.Redacted(), "error", sanitizeErr(err))
			}
		},
		ClientConfig: paho.ClientConfig{ClientID: clientID},
	}
	cm, err := autopaho.NewConnection(sctx, cc)
	if err != nil {
		scancel()
		_ = b.cfg.Issuer.Revoke(context.Background(), cred.ID)
		return nil, fmt.Errorf("start the publish bridge's MQTT connection: %w", err)
	}
	s.cm = cm
	return s, nil
}

// sanitizeErr is err's text, with nothing secret-shaped in it.
func sanitizeErr(err error) string {
	msg := err.Error()
	if secret.LooksLikeAny(msg) {
		return "(error text withheld: it looked like it held a secret)"
	}
	return msg
}

// Connected reports whether the bridge has a broker connection now.
func (b *Bridge) Connected() bool {
	s := b.cur.Load()
	return s != nil && s.up.Load()
}

// AppKeyID is the id of the application key the bridge logs in with now ("" before Start).
func (b *Bridge) AppKeyID() string {
	if s := b.cur.Load(); s != nil {
		return s.cred.ID
	}
	return ""
}

// Publish sends one message and, for QoS 1, waits for the broker's PUBACK, all within ctx. It returns
// nil, or an error that wraps one of ErrTopic, ErrUnavailable, ErrTimeout, ErrBusy or ErrRefused.
func (b *Bridge) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	if err := topicfilter.CheckTopic(topic); err != nil {
		return fmt.Errorf("%w: %w", ErrTopic, err)
	}
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w (%d in flight)", ErrBusy, cap(b.slots))
	}
	defer func() { <-b.slots }()
	s := b.cur.Load()
	if s == nil || !s.up.Load() {
		return ErrUnavailable
	}
	s.inflight.Add(1)
	defer s.inflight.Done()
	res, err := s.cm.Publish(ctx, &paho.Publish{Topic: topic, Payload: payload, QoS: qos, Retain: retain})
	switch {
	case res != nil && res.ReasonCode >= 0x80:
		return fmt.Errorf("%w: reason code 0x%02x", ErrRefused, res.ReasonCode)
	case err == nil:
		return nil
	case errors.Is(err, autopaho.ConnectionDownError):
		return ErrUnavailable
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		if qos == 0 {
			return ErrUnavailable
		}
		return ErrTimeout
	}
	return fmt.Errorf("%w: %s", ErrUnavailable, sanitizeErr(err))
}

// renewAt is when a credential is replaced: when two thirds of its lifetime ttl have passed, so that a
// renewal that fails (the database is down) is retried for a third of ttl before the key expires.
func renewAt(c Credential, ttl time.Duration) time.Time { return c.ExpiresAt.Add(-ttl / 3) }

// rotateLoop replaces the credential when two thirds of its life have passed, or at once when the
// broker refuses it (at most once every 30 s).
func (b *Bridge) rotateLoop() {
	defer close(b.done)
	var lastEarly time.Time
	for {
		s := b.cur.Load()
		t := time.NewTimer(renewAt(s.cred, b.cfg.KeyTTL).Sub(b.cfg.Now()))
		select {
		case <-b.stop:
			t.Stop()
			return
		case <-b.refused:
			t.Stop()
			if time.Since(lastEarly) < 30*time.Second {
				continue
			}
			lastEarly = time.Now()
		case <-t.C:
		}
		if err := b.rotate(); err != nil {
			b.log.Warn("could not renew the publish bridge's key; retrying in 30 s", "error", err.Error())
			select {
			case <-b.stop:
				return
			case <-time.After(30 * time.Second):
			}
		}
	}
}

// rotate starts a session with a new credential, waits (bounded) until it is up, makes it current,
// lets the old one finish its in-flight publishes (bounded), closes it and revokes its credential.
func (b *Bridge) rotate() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	ns, err := b.newSession(context.Background())
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	_ = ns.cm.AwaitConnection(actx)
	cancel()
	old := b.cur.Swap(ns)
	b.log.Info("publish bridge key renewed", "appKey", ns.cred.ID, "previous", old.cred.ID)
	b.retire(old)
	return nil
}

// retire waits up to 10 s for old's publishes, disconnects it and revokes its credential.
func (b *Bridge) retire(old *session) {
	waited := make(chan struct{})
	go func() { old.inflight.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
	}
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = old.cm.Disconnect(dctx)
	cancel()
	old.cancel()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	if err := b.cfg.Issuer.Revoke(rctx, old.cred.ID); err != nil {
		b.log.Warn("could not revoke the publish bridge's previous key; it expires by itself", "appKey", old.cred.ID, "expiresAt", old.cred.ExpiresAt, "error", err.Error())
	}
}

// Close stops rotating, lets in-flight publishes finish (up to 10 s), disconnects and revokes the
// bridge's key. Publishes after Close answer ErrUnavailable.
func (b *Bridge) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	close(b.stop)
	s := b.cur.Load()
	b.mu.Unlock()
	if s == nil {
		return
	}
	<-b.done
	s.up.Store(false)
	b.retire(s)
	b.log.Info("publish bridge stopped; its key is revoked", "appKey", s.cred.ID)
}
