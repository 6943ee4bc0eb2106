package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Licenser is what the REST API asks of the license (docs/license.md). The API does not verify licenses
// itself; the license package implements this interface and cmd/iotauth plugs it into Config.Licenser.
// When none is configured, Unlimited is used.
//
// Contract:
//   - CheckRegistration is called before anything is consumed or created on a registration path
//     (POST /api/v1/provision/agent): before the provisioning key is redeemed, so a restricted
//     deployment never burns a key (docs/security.md, P5). A non-nil error refuses the request with 403.
//   - CheckFeature guards premium routes (for example "data_export"); a non-nil error refuses with 403.
//   - MaxDevices is read on each registration. When limited is true the API enforces n atomically in
//     the registration transaction (an advisory lock, a count of agents that are not decommissioned,
//     then the insert), so concurrent registrations never overshoot (P4). It must be cheap and must not
//     block: return the value of the last evaluation.
//
// Errors: an error that has a method `ProblemCode() string` returning a non-empty code (for example
// "license_missing", "license_expired", "feature_not_licensed") is answered as 403 problem+json with
// exactly that `code`, and its Error() text becomes the problem's `detail` — so it must be safe and
// useful to show a client (never a license key or other secret). Any other error is answered with
// code "license_restricted" and a generic detail, and its text is logged. The device limit is answered
// with code "device_limit_reached".
//
// Implementations must be safe for concurrent use.
type Licenser interface {
	CheckRegistration(ctx context.Context) error
	CheckFeature(feature string) error
	MaxDevices() (n int, limited bool)
}

// Unlimited is the permissive Licenser used when none is configured: every registration and feature is
// allowed and there is no device limit.
type Unlimited struct{}

// CheckRegistration allows every registration.
func (Unlimited) CheckRegistration(context.Context) error { return nil }

// CheckFeature allows every feature.
func (Unlimited) CheckFeature(string) error { return nil }

// MaxDevices reports no limit.
func (Unlimited) MaxDevices() (int, bool) { return 0, false }

// errLicense marks a licenser refusal that carries no problem code of its own.
var errLicense = errors.New("license refused the request")

// licenseError wraps a licenser's refusal so that toProblem answers it with 403.
func licenseError(err error) error {
	if err == nil {
		return nil
	}
	var pc problemCoder
	if errors.As(err, &pc) && pc.ProblemCode() != "" {
		return err
	}
	return fmt.Errorf("%w: %w", errLicense, err)
}

// RequireFeature wraps a handler so that it answers 403 unless the licenser allows feature. It is for
// premium routes added through Config.ExtraRoutes.
func (s *Server) RequireFeature(feature string, next HandlerFunc) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.lic.CheckFeature(feature); err != nil {
			return licenseError(err)
		}
		return next(w, r)
	}
}
