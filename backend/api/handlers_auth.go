package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/iotauth/iotauth/backend/core/passhash"
	emailpkg "github.com/iotauth/iotauth/backend/email"
	"github.com/iotauth/iotauth/backend/redact"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/throttle"
	"github.com/iotauth/iotauth/backend/token"
)

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

type tokenPair struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
	ExpiresIn    int64  `json:"expiresIn"`
	TokenType    string `json:"tokenType"`
}

// loginAPI serves operators' sign-in: login with its throttle and device cookies, refresh-token
// rotation, logout and /auth/me. It holds the throttle's budgets and the keys it signs device cookies
// with; nothing else in the API uses them.
type loginAPI struct {
	cfg      Config
	st       *store.Store
	tokens   *token.Manager
	log      *slog.Logger
	metrics  *metrics
	now      func() time.Time
	hashSem  throttle.Semaphore
	acct     *throttle.Limiter
	addr     *throttle.Limiter
	dev      *throttle.Limiter
	loginKey []byte
	dummy    passhash.Hash
	audit    func(context.Context, store.AuditEvent)
}

// maxLoginPassword bounds what a login feeds to argon2id; longer passwords cannot exist (L4).
const maxLoginPassword = 4 * passhash.MaxPasswordLen

// loginFailed is the one answer for an unknown email, a wrong password and a disabled account (L1).
func loginFailed() *Problem {
	return unauthorized(CodeInvalidCredentials, "the email or password is wrong, or the account is disabled")
}

// login: POST /api/v1/auth/login.
//
// Budgets (docs/security.md, L3, U2): a login presenting a valid device cookie for its account spends that
// device's budget only; any other login spends its email's budget, known and unknown emails alike (so
// the 429 tells nothing about which accounts exist, and made-up emails never spend a real one's). Each
// such failure also counts against the client address; past its budget, failures answer 429 instead
// of 401, while a right password still gets in, so that strangers behind the same proxy cannot lock
// the real user out. The attempt is reserved before the password is checked, so parallel guesses on
// any replica cannot outrun the limit.
func (s *loginAPI) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if req.Email == "" || len(req.Email) > 4*254 {
		return invalidField("email", "email is required (at most 254 characters)")
	}
	if req.Password == "" {
		return invalidField("password", "password is required")
	}
	// The same vetting and canonical form as at user creation (package email): compatibility forms of
	// an address count against its own throttle, and an address that could not be created (a look-alike
	// with an invisible character or mixed scripts) is never looked up. It fails like an unknown email,
	// with the one answer and the dummy verify (docs/security.md, L1, L2).
	email, verr := emailpkg.Normalize(req.Email)
	if verr != nil {
		email = emailpkg.Canonical(req.Email)
	}
	ctx := r.Context()
	u, found, err := s.lookupUser(ctx, email, verr == nil)
	if err != nil {
		return err
	}
	budget, key := s.acct, s.budgetKey("acct", email)
	// The cookie is checked the same way whether the account exists or not (against a user id that
	// matches no cookie when it does not), so that its cost tells nothing about which accounts exist.
	cookieUser := unknownUserID
	if found {
		cookieUser = deviceSubject(u)
	}
	dev, onDevice := s.deviceOf(r, cookieUser)
	onDevice = onDevice && found
	if onDevice {
		budget, key = s.dev, s.budgetKey("dev", u.ID, string(dev.id[:]))
	} else {
		// Without a known device, an address that spent its budget is refused before any password is
		// checked: otherwise one address could try a password against every account (spraying).
		if blocked, wait, err := s.addr.Blocked(ctx, "addr:"+throttleNet(clientAddr(r))); err != nil {
			return err
		} else if blocked {
			return s.loginThrottled(wait)
		}
	}
	if ok, wait, err := budget.Attempt(ctx, key); err != nil {
		return err
	} else if !ok {
		return s.loginThrottled(wait)
	}
	s.pruneLoginBudgets(ctx)
	ok, err := s.checkPassword(ctx, u, found, req.Password)
	if err != nil {
		// Not the caller's fault (database, cancelled request): give the reserved attempt back.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if rerr := budget.Refund(rctx, key); rerr != nil {
			s.log.Warn("could not give back a login attempt; the budget stays one lower until its window ends", "error", rerr.Error())
		}
		return err
	}
	audit := store.AuditEvent{Actor: "anonymous", Action: "login", Target: auditEmail(email), RemoteAddr: clientAddr(r)}
	if !ok {
		s.metrics.logins.WithLabelValues("failure").Inc()
		audit.Outcome = store.OutcomeFailure
		s.audit(ctx, audit)
		if !onDevice {
			if ok, wait, err := s.addr.Attempt(ctx, "addr:"+throttleNet(clientAddr(r))); err != nil {
				return err
			} else if !ok {
				return s.loginThrottled(wait)
			}
		}
		return loginFailed()
	}
	if err := budget.Reset(ctx, key); err != nil {
		return err
	}
	pair, err := s.newFamily(ctx, u)
	if err != nil {
		return err
	}
	s.setDeviceCookie(w, r, deviceSubject(u), dev, onDevice)
	s.metrics.logins.WithLabelValues("success").Inc()
	audit.Actor, audit.Target = "user:"+u.ID, "user:"+u.ID
	if onDevice {
		audit.Detail = map[string]any{"knownDevice": true}
	}
	s.audit(ctx, audit)
	writeJSON(w, http.StatusOK, pair)
	return nil
}

// loginThrottled is the 429 of a spent budget; it says nothing about which budget, nor whether the
// account exists.
func (s *loginAPI) loginThrottled(wait time.Duration) *Problem {
	s.metrics.logins.WithLabelValues("throttled").Inc()
	p := problem(http.StatusTooManyRequests, CodeLoginThrottled, "too many failed logins; wait for the time in Retry-After and try again")
	p.retryAfter = throttle.RetryAfterSeconds(wait)
	return p
}

// pruneLoginBudgets deletes ended windows now and then (throttle.PruneInterval), so that a flood of
// made-up emails leaves no lasting rows. A failure only delays the cleanup.
func (s *loginAPI) pruneLoginBudgets(ctx context.Context) {
	if _, err := s.acct.Prune(ctx); err != nil {
		s.log.Warn("could not prune ended login-throttle windows; will try again in a minute", "error", err.Error())
	}
}

// auditEmail is how a login's email is recorded: as typed when it looks like an email, otherwise a
// placeholder, so that a secret pasted into the wrong field never lands in the audit trail.
func auditEmail(email string) string {
	if !ValidEmail(email) || redact.Contains(email) {
		return "email:[not an email]"
	}
	return "email:" + email
}

// lookupUser finds the account of a login. An address no user can have (lookup false) is not looked
// up. found is false for an unknown email.
func (s *loginAPI) lookupUser(ctx context.Context, email string, lookup bool) (store.User, bool, error) {
	if !lookup {
		return store.User{}, false, nil
	}
	u, err := s.st.Accounts.UserByEmail(ctx, email)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, false, nil
	}
	if err != nil {
		return store.User{}, false, err
	}
	return u, true, nil
}

// checkPassword verifies a login under the hash semaphore (L5). Unknown users are verified against a
// dummy hash so that every outcome costs one argon2id computation (L2). A disabled account fails like
// a wrong password.
func (s *loginAPI) checkPassword(ctx context.Context, u store.User, found bool, password string) (bool, error) {
	h := s.dummy
	known := found
	if known {
		if parsed, perr := passhash.Parse(u.PasswordHash); perr == nil {
			h = parsed
		} else {
			s.log.Warn("stored password hash of a user is malformed; login refused", "user", u.ID)
			known = false
		}
	}
	if len(password) > maxLoginPassword {
		password = password[:maxLoginPassword]
		known = false
	}
	if err := s.hashSem.Acquire(ctx); err != nil {
		return false, err
	}
	ok := h.Verify([]byte(password))
	s.hashSem.Release()
	return ok && known && !u.Disabled, nil
}

// newFamily starts a refresh-token family for u and returns the token pair.
func (s *loginAPI) newFamily(ctx context.Context, u store.User) (tokenPair, error) {
	now := s.now()
	famEnd := now.Add(s.cfg.RefreshFamilyTTL).Truncate(time.Second)
	exp := now.Add(s.tokens.RefreshTTL()).Truncate(time.Second)
	if famEnd.Before(exp) {
		exp = famEnd
	}
	rt := store.RefreshToken{JTI: token.NewID(), Family: token.NewID(), UserID: u.ID, ExpiresAt: exp, FamilyExpiresAt: famEnd}
	if err := s.st.Accounts.CreateRefreshToken(ctx, rt); err != nil {
		return tokenPair{}, err
	}
	return s.pair(ctx, u, rt)
}

func (s *loginAPI) pair(ctx context.Context, u store.User, rt store.RefreshToken) (tokenPair, error) {
	if err := s.waitPastValidAfter(ctx, u); err != nil {
		return tokenPair{}, err
	}
	access, _, err := s.tokens.IssueAccess(u.ID, u.Role)
	if err != nil {
		return tokenPair{}, err
	}
	refresh, err := s.tokens.IssueRefresh(u.ID, rt.JTI, rt.Family, rt.ExpiresAt)
	if err != nil {
		return tokenPair{}, err
	}
	return tokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: int64(s.tokens.AccessTTL() / time.Second), TokenType: "Bearer"}, nil
}

type refreshRequest struct {
	RefreshToken string `json:"refreshToken"`
}

func invalidRefresh() *Problem {
	return unauthorized(CodeInvalidRefreshToken, "the refresh token is invalid, expired, revoked or already used; log in again")
}

// refresh: POST /api/v1/auth/refresh. The presented token is spent atomically and a new pair issued in
// the same family; replaying a spent token revokes the family (R1–R3).
func (s *loginAPI) refresh(w http.ResponseWriter, r *http.Request) error {
	var req refreshRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return invalidField("refreshToken", "refreshToken is required")
	}
	old, err := s.tokens.ParseRefresh(req.RefreshToken)
	if err != nil {
		return invalidRefresh()
	}
	rot, err := s.st.Accounts.RotateRefreshToken(r.Context(), old.UserID, old.ID, token.NewID(), s.now(), s.tokens.RefreshTTL())
	switch {
	case errors.Is(err, store.ErrTokenReused):
		s.audit(r.Context(), store.AuditEvent{Actor: "user:" + old.UserID, Action: "refresh_token_reuse", Target: "refresh-family:" + old.Family,
			Outcome: store.OutcomeFailure, RemoteAddr: clientAddr(r), Detail: map[string]any{"familyRevoked": true}})
		s.log.Warn("spent refresh token presented again; family revoked", "user", old.UserID, "family", old.Family, "remote", clientAddr(r))
		return invalidRefresh()
	case errors.Is(err, store.ErrNotFound):
		return invalidRefresh()
	case err != nil:
		return err
	}
	pair, err := s.pair(r.Context(), rot.User, rot.Token)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pair)
	return nil
}

// logout: POST /api/v1/auth/logout revokes the presented refresh token's whole family (R4).
func (s *loginAPI) logout(w http.ResponseWriter, r *http.Request) error {
	var req refreshRequest
	if err := decodeJSON(w, r, maxBodyOf(r), &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return invalidField("refreshToken", "refreshToken is required")
	}
	t, err := s.tokens.ParseRefresh(req.RefreshToken)
	if err != nil {
		return invalidRefresh()
	}
	fam, user, err := s.st.Accounts.RefreshFamilyOf(r.Context(), t.ID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (user != t.UserID || fam != t.Family)) {
		return invalidRefresh()
	}
	if err != nil {
		return err
	}
	if err := s.st.Accounts.RevokeFamily(r.Context(), fam); err != nil {
		return err
	}
	s.audit(r.Context(), store.AuditEvent{Actor: "user:" + user, Action: "logout", Target: "refresh-family:" + fam, RemoteAddr: clientAddr(r)})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// me: GET /api/v1/auth/me.
func (s *loginAPI) me(w http.ResponseWriter, r *http.Request) error {
	p, _ := PrincipalFrom(r.Context())
	u, err := s.st.Accounts.UserByID(r.Context(), p.UserID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userView(u))
	return nil
}

// audit records an event that stands on its own; a failure to record it is logged, not fatal.
func (s *Server) audit(ctx context.Context, e store.AuditEvent) {
	if err := s.st.AuditTrail.Audit(ctx, e); err != nil {
		s.log.Error("could not write audit event", "action", e.Action, "error", err.Error())
	}
}

// actor is the audit actor of an operator request.
func actor(r *http.Request) string {
	if p, ok := PrincipalFrom(r.Context()); ok {
		return "user:" + p.UserID
	}
	if a, ok := AppCallerFrom(r.Context()); ok {
		return "app-key:" + a.KeyID
	}
	if k, ok := PublishableFrom(r.Context()); ok {
		return "pk:" + k.ID
	}
	return "anonymous"
}

// actorOf is who makes a request's change, for the services' audit events.
func actorOf(r *http.Request) service.Actor {
	a := service.Actor{Name: actor(r), RemoteAddr: clientAddr(r)}
	if p, ok := PrincipalFrom(r.Context()); ok {
		a.UserID = p.UserID
	}
	return a
}

func auditOf(r *http.Request, action string, detail map[string]any) store.AuditEvent {
	return store.AuditEvent{Actor: actor(r), Action: action, RemoteAddr: clientAddr(r), Detail: detail}
}

// throttleNet is the network a login counts against: the address for IPv4, its /64 for IPv6 (one
// client usually holds a whole /64 and could otherwise rotate addresses freely).
func throttleNet(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Is4() || ip.Is4In6() {
		return addr
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return addr
	}
	return p.String()
}
