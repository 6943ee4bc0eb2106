package api

import (
	"context"
	"time"

	"github.com/iotauth/iotauth/backend/store"
)

// maxValidAfterWait bounds how long issuing a token waits for the clock to leave the second of the
// user's last disable, re-enable or password change.
const maxValidAfterWait = 2 * time.Second

// issuedAfter reports whether an access token with this iat was certainly issued after the user's
// tokens_valid_after. The iat has whole seconds only, so a token from the same second as the change
// cannot be told from one issued just before it: it is refused (docs/security.md, J8: a token issued before a
// disable must stay dead when the user is enabled again, however quickly that happens).
func issuedAfter(iat time.Time, u store.User) bool {
	return iat.After(u.TokensValidAfter.Truncate(time.Second))
}

// waitPastValidAfter delays issuing a token for u until the clock has left the whole second of the
// user's tokens_valid_after, so that the fresh token is not refused by issuedAfter. It waits at most
// maxValidAfterWait (only a login or refresh within a second of such a change ever waits); a longer
// wait means the database's clock is ahead of this server's, which is logged.
func (s *loginAPI) waitPastValidAfter(ctx context.Context, u store.User) error {
	d := u.TokensValidAfter.Truncate(time.Second).Add(time.Second).Sub(s.now())
	if d <= 0 {
		return nil
	}
	if d > maxValidAfterWait {
		s.log.Warn("the database clock is ahead of this server's clock; access tokens issued now are refused until the clocks agree (check NTP on both hosts)",
			"user", u.ID, "aheadBy", d.Round(time.Millisecond).String())
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
