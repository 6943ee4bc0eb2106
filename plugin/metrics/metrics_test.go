package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/iotauth/iotauth/backend/core/credential"
	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/cache"
	"github.com/iotauth/iotauth/plugin/auth"
	"github.com/iotauth/iotauth/plugin/session"
)

func TestReasonOf(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{auth.ErrNoCredentials, "no_credentials"},
		{auth.ErrMalformed, "malformed"},
		{auth.ErrBadIdentifier, "bad_identifier"},
		{auth.ErrSecretClientID, "secret_client_id"},
		{auth.ErrUnknownKey, "unknown_key"},
		{auth.ErrLookupBudget, "lookup_budget"},
		{auth.ErrBadPassword, "bad_password"},
		{auth.ErrNoMQTTPassword, "no_mqtt_password"},
		{auth.ErrRevoked, "revoked"},
		{auth.ErrExpired, "expired"},
		{auth.ErrAgentDisabled, "agent_disabled"},
		{auth.ErrNoMQTTRight, "no_mqtt_right"},
		{auth.ErrClientID, "client_id"},
		{auth.ErrAgentClientID, "client_id"},
		{session.ErrClientIDTaken, "client_id_taken"},
		{auth.ErrUnavailable, "unavailable"},
		{auth.ErrCorrupt, "corrupt"},
		{auth.ErrCredsChanged, "creds_changed"},
		{ErrReservedName, "reserved_name"},
		{&auth.AppKeyRefused{KeyID: "k", Err: auth.ErrRevoked}, "revoked"},
		{fmt.Errorf("lookup: %w", auth.ErrUnavailable), "unavailable"},
		{errors.Join(errors.New("x"), auth.ErrExpired), "expired"},
		{errors.New("something new"), "other"},
		{nil, "other"},
	}
	for _, tt := range tests {
		if got := ReasonOf(tt.err).String(); got != tt.want {
			t.Errorf("ReasonOf(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

// Label values are a fixed set of snake_case words: nothing a client sent can become a label.
func TestLabelValuesAreBounded(t *testing.T) {
	word := regexp.MustCompile(`^[a-z][a-z_]*$`)
	seen := map[string]bool{}
	for _, r := range Reasons() {
		s := r.String()
		if !word.MatchString(s) || seen[s] {
			t.Errorf("reason %d: %q is not a unique snake_case word", r, s)
		}
		seen[s] = true
	}
	if Agent.String() != "agent" || App.String() != "app" {
		t.Errorf("principals: %s, %s", Agent, App)
	}
}

func TestCounts(t *testing.T) {
	m := New(Sources{})
	m.Allowed(Agent)
	m.Allowed(Agent)
	m.Allowed(App)
	m.Refused(Agent, auth.ErrBadPassword)
	m.Refused(App, &auth.AppKeyRefused{Err: auth.ErrBadPassword})
	m.Refused(Agent, errors.New("new"))
	m.Deferred()
	m.Kicked(auth.ErrRevoked)
	m.Kicked(auth.ErrExpired)
	m.Kicked(auth.ErrExpired)
	m.Applied(m.Notified().Add(-time.Second))
	m.Applied(time.Time{}) // not a notification: not recorded
	m.Preloaded(1234, 1500*time.Millisecond)
	m.AuditDropped(3)
	checks := []struct {
		got, want float64
		what      string
	}{
		{value(t, m.allowed[Agent]), 2, "allowed agent"},
		{value(t, m.allowed[App]), 1, "allowed app"},
		{value(t, m.refused[Agent][BadPassword]), 1, "refused agent bad_password"},
		{value(t, m.refused[App][BadPassword]), 1, "refused app bad_password"},
		{value(t, m.refused[Agent][Other]), 1, "refused agent other"},
		{value(t, m.deferred), 1, "deferred"},
		{value(t, m.kicks[Revoked]), 1, "kicks revoked"},
		{value(t, m.kicks[Expired]), 2, "kicks expired"},
		{value(t, m.notifies), 1, "notifications"},
		{value(t, m.preloadN), 1234, "preload credentials"},
		{value(t, m.preloadT), 1.5, "preload seconds"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	text := gather(t, m)
	for _, want := range []string{
		`iotauth_plugin_notify_apply_seconds_count 1`,
		`iotauth_plugin_connects_refused_total{principal="app",reason="unknown_key"} 0`, // pre-resolved: present at 0
		`iotauth_plugin_kicks_total{reason="expired"} 2`,
		`iotauth_plugin_audit_events_dropped_total 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if !regexp.MustCompile(`iotauth_plugin_notify_apply_seconds_sum (1\.\d+|1)\n`).MatchString(text) {
		t.Errorf("apply time of a change that arrived a second ago is not about 1 s:\n%s", grep(text, "notify_apply_seconds_sum"))
	}
}

// The figures other packages keep are read when scraped.
func TestSources(t *testing.T) {
	live := 3
	m := New(Sources{
		Cache: func() cache.Stats {
			return cache.Stats{Hits: 10, Misses: 2, NegativeHits: 4, StaleHits: 1, Evictions: 5, Len: 7}
		},
		Auth: func() auth.Stats {
			return auth.Stats{StoreFailures: 6, FailFastWindows: 2, StaleServed: 1, StoreDown: true}
		},
		Sessions: func() (int, int) { return live, 9 },
	})
	text := gather(t, m)
	live = 4
	text2 := gather(t, m)
	for _, want := range []string{
		`iotauth_plugin_cache_lookups_total{result="hit"} 10`,
		`iotauth_plugin_cache_lookups_total{result="miss"} 2`,
		`iotauth_plugin_cache_lookups_total{result="negative_hit"} 4`,
		`iotauth_plugin_cache_lookups_total{result="stale"} 1`,
		`iotauth_plugin_cache_evictions_total 5`,
		`iotauth_plugin_cache_entries 7`,
		`iotauth_plugin_db_errors_total 6`,
		`iotauth_plugin_db_fail_fast_windows_total 2`,
		`iotauth_plugin_stale_served_total 1`,
		`iotauth_plugin_db_down 1`,
		`iotauth_plugin_sessions{state="live"} 3`,
		`iotauth_plugin_sessions{state="ended"} 9`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if !strings.Contains(text2, `iotauth_plugin_sessions{state="live"} 4`) {
		t.Error("a second scrape did not read the session count again")
	}
}

type fakeStore struct{ err error }

func (f fakeStore) LookupCredential(context.Context, secret.Digest) (credential.Credential, error) {
	time.Sleep(time.Millisecond)
	return credential.Credential{}, f.err
}

func (f fakeStore) LookupAppCredential(context.Context, secret.Digest) (credential.Credential, error) {
	return credential.Credential{}, f.err
}

func TestTimedLookups(t *testing.T) {
	m := New(Sources{})
	for _, err := range []error{nil, credential.ErrNotFound, fmt.Errorf("row: %w", credential.ErrCorrupt), context.DeadlineExceeded, context.DeadlineExceeded} {
		st := m.Timed(fakeStore{err: err})
		if _, got := st.LookupCredential(context.Background(), secret.Digest{}); got != err {
			t.Fatalf("Timed changed the error: %v, want %v", got, err)
		}
	}
	if _, err := m.Timed(fakeStore{}).LookupAppCredential(context.Background(), secret.Digest{}); err != nil {
		t.Fatal(err)
	}
	text := gather(t, m)
	for _, want := range []string{
		`iotauth_plugin_db_lookup_duration_seconds_count{result="found"} 2`,
		`iotauth_plugin_db_lookup_duration_seconds_count{result="not_found"} 1`,
		`iotauth_plugin_db_lookup_duration_seconds_count{result="corrupt"} 1`,
		`iotauth_plugin_db_lookup_duration_seconds_count{result="error"} 2`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("exposition lacks %q", want)
		}
	}
	// The authorizer sees an application-key store through the wrapper.
	if _, ok := m.Timed(fakeStore{}).(auth.AppLookup); !ok {
		t.Error("the timed store hides LookupAppCredential")
	}
}

// A nil *Metrics (plugin_opt_metrics_listen unset) records nothing and hands the store through.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Allowed(App)
	m.Refused(Agent, auth.ErrRevoked)
	m.Deferred()
	m.Kicked(auth.ErrRevoked)
	m.Applied(m.Notified())
	m.Preloaded(1, time.Second)
	m.AuditDropped(1)
	st := fakeStore{}
	if got := m.Timed(st); got != Store(st) {
		t.Errorf("Timed on nil metrics wrapped the store: %T", got)
	}
}

// The connect path's counting allocates nothing.
func TestCountingAllocatesNothing(t *testing.T) {
	m := New(Sources{})
	err := &auth.AppKeyRefused{Err: auth.ErrRevoked}
	if n := testing.AllocsPerRun(1000, func() {
		m.Allowed(Agent)
		m.Refused(App, err)
		m.Refused(Agent, auth.ErrBadPassword)
		m.Kicked(auth.ErrCredsChanged)
	}); n != 0 {
		t.Errorf("%v allocations per connect", n)
	}
}

func TestServer(t *testing.T) {
	m := New(Sources{})
	m.Allowed(Agent)
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := m.Server(nil)
	if srv.ReadHeaderTimeout == 0 || srv.ReadTimeout == 0 || srv.WriteTimeout == 0 || srv.IdleTimeout == 0 {
		t.Errorf("a server timeout is not set: %+v", srv)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `iotauth_plugin_connects_allowed_total{principal="agent"} 1`) {
		t.Errorf("GET /metrics: %d\n%s", resp.StatusCode, body)
	}
	if !strings.Contains(string(body), "process_cpu_seconds_total") || !strings.Contains(string(body), "go_goroutines") {
		t.Error("the process and Go collectors are missing")
	}
	for path, code := range map[string]int{"/": 404, "/metricsx": 404, "/debug/pprof/": 404} {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, code)
		}
	}
	// An address in use is refused with the option's name.
	if _, err := Listen(ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "plugin_opt_metrics_listen "+ln.Addr().String()+": cannot listen") {
		t.Errorf("Listen on a busy address: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v after Shutdown", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("the listener is still open after Shutdown")
	}
}

// Each registry is the metrics' own: two instances (two tests, or a reload in one process) do not clash.
func TestOwnRegistry(t *testing.T) {
	a, b := New(Sources{}), New(Sources{})
	a.Allowed(Agent)
	if value(t, b.allowed[Agent]) != 0 {
		t.Error("two Metrics share a counter")
	}
}

// value reads a counter's or gauge's current value.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func gather(t *testing.T, m *Metrics) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := m.Server(nil)
	go srv.Serve(ln)
	defer srv.Close()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func BenchmarkAllowed(b *testing.B) {
	m := New(Sources{})
	b.ReportAllocs()
	for b.Loop() {
		m.Allowed(Agent)
	}
}

func BenchmarkRefused(b *testing.B) {
	m := New(Sources{})
	err := &auth.AppKeyRefused{Err: auth.ErrBadPassword}
	b.ReportAllocs()
	for b.Loop() {
		m.Refused(App, err)
	}
}

func BenchmarkAllowedOff(b *testing.B) {
	var m *Metrics
	b.ReportAllocs()
	for b.Loop() {
		m.Allowed(Agent)
	}
}
