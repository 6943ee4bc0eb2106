package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"github.com/iotauth/iotauth/backend/store"
	"net/http"
	"strconv"
	"time"
)

// DeviceCookieName is the cookie that marks a browser or client as a known-good device of one account:
// a login that presents a valid one for the account it logs in to is judged by that device's own
// budget, not by the account's lock-out, so that strangers' failures cannot lock out the real user
// (docs/security.md, U2). It is a secret: never logged, HttpOnly, sent only to the login route.
const DeviceCookieName = "iotauth_device"

const (
	deviceIDLen     = 16
	deviceCookieLen = deviceIDLen + 8 + sha256.Size
	devicePath      = "/api/v1/auth/login"
)

// device is a verified device cookie.
type device struct {
	id [deviceIDLen]byte
}

// deviceMAC binds a device id and its issue time to one user under the server's login key.
func (s *loginAPI) deviceMAC(userID string, id []byte, issued int64) []byte {
	m := hmac.New(sha256.New, s.loginKey)
	m.Write([]byte("iotauth device cookie v1\x00"))
	m.Write([]byte(userID))
	m.Write([]byte{0})
	m.Write(id)
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(issued))
	m.Write(ts[:])
	return m.Sum(nil)
}

// deviceOf returns the request's device cookie when it is valid for userID: signed by this deployment's
// login key, bound to that user, and younger than DeviceCookieTTL. The cookie carries a random device id,
// its issue time and the MAC; the user id is only inside the MAC, so the cookie does not name the account.
func (s *loginAPI) deviceOf(r *http.Request, userID string) (device, bool) {
	var d device
	cookies := r.CookiesNamed(DeviceCookieName)
	// A browser sends one; at most two are looked at, so that a request stuffed with cookies cannot buy
	// a measurable amount of HMAC work (a timing signal).
	if len(cookies) > 2 {
		cookies = cookies[:2]
	}
	for _, c := range cookies {
		b, err := base64.RawURLEncoding.DecodeString(c.Value)
		if err != nil || len(b) != deviceCookieLen {
			continue
		}
		id, ts, mac := b[:deviceIDLen], b[deviceIDLen:deviceIDLen+8], b[deviceIDLen+8:]
		issued := int64(binary.BigEndian.Uint64(ts))
		if !hmac.Equal(mac, s.deviceMAC(userID, id, issued)) {
			continue
		}
		at := time.Unix(issued, 0)
		now := s.now()
		if now.Sub(at) >= s.cfg.DeviceCookieTTL || at.After(now.Add(time.Minute)) {
			continue
		}
		copy(d.id[:], id)
		return d, true
	}
	return d, false
}

// setDeviceCookie marks the client as a known-good device of userID after a successful login: the same
// device id when it already had one for this user (its budget carries on), a new one otherwise.
func (s *loginAPI) setDeviceCookie(w http.ResponseWriter, r *http.Request, userID string, d device, known bool) {
	if !known {
		if _, err := rand.Read(d.id[:]); err != nil {
			s.log.Error("could not make a device id; no device cookie set", "error", err.Error())
			return
		}
	}
	issued := s.now().Unix()
	b := make([]byte, 0, deviceCookieLen)
	b = append(b, d.id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(issued))
	b = append(b, s.deviceMAC(userID, d.id[:], issued)...)
	http.SetCookie(w, &http.Cookie{
		Name:     DeviceCookieName,
		Value:    base64.RawURLEncoding.EncodeToString(b),
		Path:     devicePath,
		MaxAge:   int(s.cfg.DeviceCookieTTL / time.Second),
		HttpOnly: true,
		Secure:   clientHTTPS(r),
		SameSite: http.SameSiteStrictMode,
	})
}

// budgetKey names a throttle budget without putting what a client typed into the database: kind, then
// a keyed digest of the parts.
func (s *loginAPI) budgetKey(kind string, parts ...string) string {
	m := hmac.New(sha256.New, s.loginKey)
	m.Write([]byte("iotauth login budget v1\x00" + kind))
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write([]byte(p))
	}
	return kind + ":" + hex.EncodeToString(m.Sum(nil)[:20])
}

// unknownUserID is what a device cookie is checked against when the login names no account: no cookie
// is ever issued for it, so the check costs the same and never passes.
const unknownUserID = "00000000-0000-0000-0000-000000000000"

// deviceSubject is what a device cookie is bound to: the user, and the time their tokens were last
// invalidated (a password change, a disable or re-enable), so that such a change also forgets every
// known device, a stolen cookie included.
func deviceSubject(u store.User) string {
	return u.ID + "/" + strconv.FormatInt(u.TokensValidAfter.UnixNano(), 10)
}
