package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/iotauth/iotauth/backend/license"
)

// LicenseReporter is implemented by a Licenser that can describe its whole evaluation; license.Manager
// does. GET /api/v1/license shows that description. For a Licenser without it (Unlimited, test doubles)
// the route derives what the Licenser interface can tell: restricted or not, features, the limit.
type LicenseReporter interface {
	Status() license.Status
}

// licenseJSON is the body of GET /api/v1/license: the license's evaluation plus the number of agents
// the device limit counts (those not decommissioned).
type licenseJSON struct {
	license.Status
	DeviceCount int `json:"deviceCount"`
}

// getLicense: GET /api/v1/license (admin). The evaluation comes from memory; only the device count
// touches the database. The status's message may name configuration settings, which is why the route is
// for admins only; it never holds the license token.
func (s *adminAPI) getLicense(w http.ResponseWriter, r *http.Request) error {
	var st license.Status
	if rep, ok := s.lic.(LicenseReporter); ok {
		st = rep.Status()
	} else {
		st = deriveStatus(r.Context(), s.lic, s.now())
	}
	n, err := s.st.Agents.CountAgents(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, licenseJSON{Status: st, DeviceCount: n})
	return nil
}

// deriveStatus describes a Licenser that does not report its own Status.
func deriveStatus(ctx context.Context, l Licenser, now time.Time) license.Status {
	st := license.Status{Status: license.StateValid, Features: []string{}, CheckedAt: now}
	if err := l.CheckRegistration(ctx); err != nil {
		st.Status, st.Restricted, st.Reason = license.StateRestricted, true, CodeLicenseRestricted
		var pc problemCoder
		if errors.As(err, &pc) && pc.ProblemCode() != "" {
			st.Reason = pc.ProblemCode()
		}
		return st
	}
	for _, f := range license.KnownFeatures() {
		if l.CheckFeature(f) == nil {
			st.Features = append(st.Features, f)
		}
	}
	if n, limited := l.MaxDevices(); limited {
		st.MaxDevices = &n
	}
	return st
}
