package main

import (
	"context"
	"log/slog"

	"github.com/iotauth/iotauth/backend/api"
)

// licensing returns the Licenser that `serve` hands the API, and any routes the license adds (such as
// GET /api/v1/license). This is the seam where backend/license plugs in (DESIGN §7): read
// LICENSE_PUBLIC_KEY and LICENSE_KEY, verify, re-evaluate on SIGHUP and every minute until ctx ends.
// Until it does, the API runs with api.Unlimited (a nil Licenser).
func licensing(ctx context.Context, log *slog.Logger) (api.Licenser, []api.Route, error) {
	return nil, nil, nil
}
