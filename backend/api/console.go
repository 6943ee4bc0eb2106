package api

import (
	"context"
	"net/http"

	"github.com/iotauth/iotauth/backend/store"
)

// consoleOperatorKey marks an in-process request made by the operator console for a signed-in user.
type consoleOperatorKey struct{}

// AsConsoleOperator marks ctx as carrying a request of the operator console on behalf of userID, whose
// console session the console has just found live in the database (docs/console.md). The API then
// treats the request as that user's, with the same checks as for an access token: the user must exist
// and be enabled, and the role comes from the database. A context value cannot be set by a client, so
// only code in this process (the console) can make such a request.
func AsConsoleOperator(ctx context.Context, userID string) context.Context {
	return context.WithValue(ctx, consoleOperatorKey{}, userID)
}

func consoleOperator(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(consoleOperatorKey{}).(string)
	return id, ok && id != ""
}

// ConsoleSessions is the store the console keeps its server-side sessions in: the API's own database.
func (s *Server) ConsoleSessions() *store.Store { return s.st }

// RefreshFamily checks a refresh token the API issued and returns its user and family: the console
// ties a new session to the family of its sign-in, which sign-out revokes.
func (s *Server) RefreshFamily(refreshToken string) (userID, family string, err error) {
	t, err := s.tokens.ParseRefresh(refreshToken)
	if err != nil {
		return "", "", err
	}
	return t.UserID, t.Family, nil
}

// ClientAddr is the address of the client of r as the API judges it (the peer, or the nearest
// untrusted hop of X-Forwarded-For when the peer is in TRUSTED_PROXIES): the console audits its
// sign-outs with it, as the API audits its own requests.
func (s *Server) ClientAddr(r *http.Request) string { return clientAddr(s.withClient(r)) }
