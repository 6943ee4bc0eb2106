package license

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// reminderEvery is how often a Manager repeats the warning log line while the license is in the warning
// or grace state, so that it is not lost in a busy log.
const reminderEvery = 24 * time.Hour

// Options configure a Manager. Source is required; the rest have defaults.
type Options struct {
	// Source supplies the key and token; EnvSource(os.Getenv) in production.
	Source Source
	// Policy sets issuer, audience and the time windows.
	Policy Policy
	// Interval is how often Run re-evaluates the license against the clock (DefaultInterval).
	Interval time.Duration
	// Now is the clock (time.Now). Tests inject a fake one to cross exp without sleeping.
	Now func() time.Time
	// Logger receives one line per state change (slog.Default()). The token is never logged.
	Logger *slog.Logger
	// Ticks, when set, replaces Run's internal ticker: Run re-evaluates once per value received. Tests use
	// it to drive the periodic path by hand.
	Ticks <-chan time.Time
}

// Manager holds the current license evaluation for a running server and answers the REST API's gate
// questions from memory, lock-free. It re-evaluates every Interval (so a license expires on time in a
// long-running process) and re-reads its Source on Reload (so a new key or license takes effect on SIGHUP).
type Manager struct {
	source   Source
	policy   Policy
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
	ticks    <-chan time.Time

	mu        sync.Mutex // serialises evaluations and guards the fields below
	material  Material
	sourceErr error
	logged    transitionKey
	remindAt  time.Time

	cur atomic.Pointer[snapshot]
}

// snapshot is one published evaluation; never modified after it is stored.
type snapshot struct {
	status   Status
	features map[string]bool
}

// transitionKey is what must change for a new log line (not CheckedAt or the countdown in Message).
type transitionKey struct {
	state                   State
	reason, customer, feats string
	exp                     time.Time
	maxDevices              int
}

// NewManager validates o, reads the Source and evaluates the license once, so the returned Manager already
// answers with the real state. A bad license is not an error here: it is restricted mode, logged.
func NewManager(o Options) (*Manager, error) {
	if o.Source == nil {
		return nil, errors.New("license: no Source given (use license.EnvSource(os.Getenv))")
	}
	if err := o.Policy.Validate(); err != nil {
		return nil, err
	}
	if o.Interval < 0 {
		return nil, fmt.Errorf("license re-evaluation interval %v is negative; use a duration such as 1m", o.Interval)
	}
	m := &Manager{
		source:   o.Source,
		policy:   o.Policy.withDefaults(),
		interval: o.Interval,
		now:      o.Now,
		log:      o.Logger,
		ticks:    o.Ticks,
	}
	if m.interval == 0 {
		m.interval = DefaultInterval
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.Reload()
	return m, nil
}

// Run re-evaluates the license every Interval (or on each value from Options.Ticks) until ctx is done.
// Start it in its own goroutine next to the HTTP server.
func (m *Manager) Run(ctx context.Context) {
	ticks := m.ticks
	if ticks == nil {
		t := time.NewTicker(m.interval)
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
			m.Reevaluate()
		}
	}
}

// Reload re-reads the Source (environment and files) and evaluates the result; the serve command calls it on
// SIGHUP. It always logs the outcome, since an operator who sent SIGHUP wants to see what happened.
func (m *Manager) Reload() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.material, m.sourceErr = m.source()
	trigger := "reload"
	if m.cur.Load() == nil {
		trigger = "start"
	}
	return m.evaluateLocked(trigger)
}

// Reevaluate judges the material last read against the current clock, without re-reading the Source.
// Run calls it every Interval; it logs only when the state changes.
func (m *Manager) Reevaluate() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.evaluateLocked("clock")
}

// evaluateLocked judges the current material, publishes the result and logs it; trigger says why
// ("start", "reload" or "clock"). Only "clock" evaluations are quiet when nothing changed.
func (m *Manager) evaluateLocked(trigger string) Status {
	now := m.now()
	var st Status
	if m.sourceErr != nil {
		st = restricted(CodeInvalid, "cannot read the license configuration: "+m.sourceErr.Error(), now)
	} else {
		st = Evaluate(m.material, m.policy, now)
	}
	feats := make(map[string]bool, len(st.Features))
	for _, f := range st.Features {
		feats[f] = true
	}
	m.cur.Store(&snapshot{status: st, features: feats})
	m.logLocked(st, trigger)
	return st.clone()
}

func (m *Manager) logLocked(st Status, trigger string) {
	key := transitionKey{state: st.Status, reason: st.Reason, customer: st.Customer, feats: fmt.Sprint(st.Features)}
	if st.ExpiresAt != nil {
		key.exp = *st.ExpiresAt
	}
	if st.MaxDevices != nil {
		key.maxDevices = *st.MaxDevices
	}
	changed := key != m.logged
	remind := st.Warning && !st.CheckedAt.Before(m.remindAt)
	if trigger == "clock" && !changed && !remind {
		return
	}
	m.logged = key
	if st.Warning {
		m.remindAt = st.CheckedAt.Add(reminderEvery)
	}
	level, msg := slog.LevelInfo, "license valid"
	switch st.Status {
	case StateWarning:
		level, msg = slog.LevelWarn, "license expires soon"
	case StateGrace:
		level, msg = slog.LevelWarn, "license expired; in grace period"
	case StateRestricted:
		level, msg = slog.LevelError, "license restricted: new agents and premium features are blocked"
	}
	attrs := []slog.Attr{slog.String("status", string(st.Status))}
	if st.Reason != "" {
		attrs = append(attrs, slog.String("reason", st.Reason))
	}
	if st.Customer != "" {
		attrs = append(attrs, slog.String("customer", st.Customer))
	}
	if st.ExpiresAt != nil {
		attrs = append(attrs, slog.Time("expiresAt", *st.ExpiresAt))
	}
	if st.MaxDevices != nil {
		attrs = append(attrs, slog.Int("maxDevices", *st.MaxDevices))
	}
	attrs = append(attrs, slog.Any("features", st.Features))
	if st.Message != "" {
		attrs = append(attrs, slog.String("detail", st.Message))
	}
	attrs = append(attrs, slog.String("trigger", trigger))
	m.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// Status returns the current evaluation; the caller may keep and modify the copy.
func (m *Manager) Status() Status { return m.cur.Load().status.clone() }

// Restricted reports whether the server is in restricted mode.
func (m *Manager) Restricted() bool { return m.cur.Load().status.Restricted }

// CheckRegistration answers whether a new agent may be registered now: nil when the license allows it,
// otherwise an *Error coded license_missing, license_invalid or license_expired. Call it before consuming
// a provisioning key or writing anything; the device limit is checked separately, inside the transaction
// (see CheckDeviceCount). ctx is accepted so the gate can later consult something remote without an API
// change.
func (m *Manager) CheckRegistration(ctx context.Context) error {
	_ = ctx
	if st := m.cur.Load().status; st.Restricted {
		return &Error{Reason: st.Reason, Detail: clientDetail(st.Reason, "new agents cannot be registered")}
	}
	return nil
}

// CheckFeature answers whether a premium feature (FeatureDataExport, …) may be used now: nil when the
// license is usable and grants it; the restriction's *Error when the server is restricted; otherwise an
// *Error coded feature_not_licensed.
func (m *Manager) CheckFeature(feature string) error {
	s := m.cur.Load()
	if s.status.Restricted {
		return &Error{Reason: s.status.Reason, Detail: clientDetail(s.status.Reason, fmt.Sprintf("the %q feature is unavailable", feature))}
	}
	if !s.features[feature] {
		return &Error{Reason: CodeFeatureNotLicensed, Detail: fmt.Sprintf("the installed license does not include the %q feature", feature)}
	}
	return nil
}

// MaxDevices returns the device limit: (n, true) when at most n agents may be registered, (0, false) when
// the license sets no limit. A restricted server reports (0, true): no new devices at all.
func (m *Manager) MaxDevices() (n int, limited bool) {
	st := m.cur.Load().status
	switch {
	case st.Restricted:
		return 0, true
	case st.MaxDevices == nil:
		return 0, false
	}
	return *st.MaxDevices, true
}

// CheckDeviceCount is the device-limit decision for the provisioning transaction: given how many agents
// are registered (counted inside the same serialised transaction that will insert the new one), it
// returns nil when one more fits, a DeviceLimitError when the limit is reached, or the restriction's
// *Error. Lowering the limit below the current count blocks new agents and disconnects nobody.
func (m *Manager) CheckDeviceCount(registered int) error {
	if err := m.CheckRegistration(context.Background()); err != nil {
		return err
	}
	if n, limited := m.MaxDevices(); limited && registered >= n {
		return DeviceLimitError(n, registered)
	}
	return nil
}
