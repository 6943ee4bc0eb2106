package api

import (
	"net/http"

	"github.com/iotauth/iotauth/backend/service"
)

// Licenser is what the REST API asks of the license (docs/license.md): service.Licenser, whose
// contract it follows. The license package implements it and cmd/iotauth plugs it into Config.Licenser.
// When none is configured, Unlimited is used. A refusal with its own ProblemCode is answered 403 with
// that code and its text; any other 403 license_restricted; the device limit 403 device_limit_reached.
type Licenser = service.Licenser

// Unlimited is the permissive Licenser used when none is configured.
type Unlimited = service.Unlimited

// licenseError wraps a licenser's refusal so that toProblem answers it with 403.
func licenseError(err error) error { return service.LicenseRefusal(err) }

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
