package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/iotauth/iotauth/backend/license"
)

// devLicenseHint is the operator's way out of restricted mode, logged whenever serve is restricted. It
// names commands and settings, never a key or a token.
const devLicenseHint = "install the vendor's license: set LICENSE_PUBLIC_KEY_FILE (or LICENSE_PUBLIC_KEY) to the vendor's public key " +
	"and LICENSE_KEY_FILE (or LICENSE_KEY) to the license JWT, then send SIGHUP (kill -HUP <pid>) or restart; " +
	"for development make your own: iotauth license keygen -out-dir DIR, then " +
	"iotauth license issue -private-key DIR/license-private.pem -customer NAME -max-devices N -features data_export -expires YYYY-MM-DD > DIR/license.jwt, " +
	"and point LICENSE_PUBLIC_KEY_FILE at DIR/license-public.pem and LICENSE_KEY_FILE at DIR/license.jwt"

// licenseWiring is how serve runs the license. Production fills Getenv, Logger and Reload (SIGHUP); tests
// also set the clock and the ticks to cross an expiry without waiting.
type licenseWiring struct {
	// Getenv reads LICENSE_PUBLIC_KEY[_FILE], LICENSE_KEY[_FILE], LICENSE_WARNING_WINDOW and
	// LICENSE_GRACE_PERIOD; files are re-read on every reload.
	Getenv func(string) string
	Logger *slog.Logger
	// Now is the license clock (time.Now); Ticks, when set, replaces the one-minute ticker.
	Now   func() time.Time
	Ticks <-chan time.Time
	// Reload delivers the requests to re-read the license (SIGHUP in production).
	Reload <-chan os.Signal
}

// licensing builds the license.Manager that serve hands the API as its Licenser (docs/license.md), evaluated
// now, re-evaluated every minute and re-read on SIGHUP until ctx ends. SIGHUP is claimed before this
// returns, so from then on it reloads the license and never kills the process (its default action).
//
// A missing, invalid or expired license is not an error: the server starts in restricted mode and says
// how to fix it. Only an unusable policy setting (LICENSE_WARNING_WINDOW, LICENSE_GRACE_PERIOD) stops the
// start, like any other malformed setting.
func licensing(ctx context.Context, getenv func(string) string, log *slog.Logger) (*license.Manager, error) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return startLicensing(ctx, licenseWiring{Getenv: getenv, Logger: log, Reload: hup})
}

// startLicensing is licensing with every input explicit.
func startLicensing(ctx context.Context, w licenseWiring) (*license.Manager, error) {
	policy, err := license.PolicyFromEnv(w.Getenv)
	if err != nil {
		return nil, err
	}
	mgr, err := license.NewManager(license.Options{
		Source:   license.EnvSource(w.Getenv),
		Policy:   policy,
		Interval: license.DefaultInterval,
		Now:      w.Now,
		Logger:   w.Logger,
		Ticks:    w.Ticks,
	})
	if err != nil {
		return nil, err
	}
	hintIfRestricted(w.Logger, mgr.Status())
	go mgr.Run(ctx)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.Reload:
				w.Logger.Info("SIGHUP: re-reading the license")
				hintIfRestricted(w.Logger, mgr.Reload())
			}
		}
	}()
	return mgr, nil
}

// hintIfRestricted logs how to leave restricted mode and what keeps working meanwhile.
func hintIfRestricted(log *slog.Logger, st license.Status) {
	if !st.Restricted {
		return
	}
	log.Warn("restricted mode: existing agents keep connecting and polling, logins, reads and revocation work; "+
		"new agents and premium features answer 403 until a valid license is installed",
		"reason", st.Reason, "fix", devLicenseHint)
}
