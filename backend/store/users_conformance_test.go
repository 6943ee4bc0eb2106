package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/store"
)

// testUsers: CreateUser, UserByEmail, UserByID, ListUsers, UpdateUser (roles, the last admin, disabling
// and new passwords revoking refresh tokens).
func testUsers(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	adm, err := st.Accounts.CreateUser(ctx, "Admin@Example.com", "hash-a", store.RoleAdmin, audit("user_create"))
	wantErr(t, "CreateUser", err, nil)
	if adm.Email != "admin@example.com" || adm.Role != store.RoleAdmin || adm.Disabled || adm.PasswordHash != "hash-a" ||
		d.count("audit_events", "action = 'user_create' AND target = $1", "user:"+adm.ID) != 1 {
		t.Fatalf("CreateUser = %+v", adm)
	}
	// Conflict: the email is unique whatever its case; invalid: an unknown role. No event for either.
	_, err = st.Accounts.CreateUser(ctx, "ADMIN@example.COM", "hash-b", store.RoleViewer, audit("user_create"))
	wantErr(t, "CreateUser with a taken email", err, store.ErrConflict)
	_, err = st.Accounts.CreateUser(ctx, "root@example.com", "hash-b", "root", audit("user_create"))
	wantErr(t, "CreateUser with an unknown role", err, store.ErrInvalid)
	_, err = st.Accounts.CreateUser(ctx, "new@example.com", "hash-b", store.RoleViewer, badAudit("user_create"))
	wantErr(t, "CreateUser, audit refused", err, store.ErrBadCharacter)
	if d.count("users", "true") != 1 || d.audits("user_create") != 1 {
		t.Fatal("refused users left rows or events")
	}
	op, err := st.Accounts.CreateUser(ctx, "op@example.com", "hash-o", store.RoleOperator, audit("user_create"))
	wantErr(t, "CreateUser operator", err, nil)

	// Lookups.
	if u, err := st.Accounts.UserByEmail(ctx, " OP@example.com "); err != nil || u.ID != op.ID {
		t.Fatalf("UserByEmail = %+v, %v", u, err)
	}
	if u, err := st.Accounts.UserByID(ctx, adm.ID); err != nil || u.Email != adm.Email {
		t.Fatalf("UserByID = %+v, %v", u, err)
	}
	_, err = st.Accounts.UserByEmail(ctx, "nobody@example.com")
	wantErr(t, "UserByEmail unknown", err, store.ErrNotFound)
	for _, id := range []string{unknownUUID, "nope"} {
		_, err := st.Accounts.UserByID(ctx, id)
		wantErr(t, "UserByID("+id+")", err, store.ErrNotFound)
		_, err = st.Accounts.UpdateUser(ctx, id, store.UserChange{}, audit("user_update"))
		wantErr(t, "UpdateUser("+id+")", err, store.ErrNotFound)
	}
	page, more, err := st.Accounts.ListUsers(ctx, store.Page{Limit: 1})
	wantErr(t, "ListUsers", err, nil)
	if len(page) != 1 || !more || page[0].ID != adm.ID {
		t.Fatalf("first page: %d users, more %v", len(page), more)
	}
	page, more, err = st.Accounts.ListUsers(ctx, store.Page{Limit: 1, AfterTime: page[0].CreatedAt, AfterID: page[0].ID})
	wantErr(t, "ListUsers page 2", err, nil)
	if len(page) != 1 || more || page[0].ID != op.ID {
		t.Fatalf("second page: %d users, more %v", len(page), more)
	}

	// The last enabled admin can be neither demoted nor disabled; the refusal writes nothing.
	viewer, disabled := store.RoleViewer, true
	_, err = st.Accounts.UpdateUser(ctx, adm.ID, store.UserChange{Role: &viewer}, audit("user_update"))
	wantErr(t, "demote the last admin", err, store.ErrLastAdmin)
	_, err = st.Accounts.UpdateUser(ctx, adm.ID, store.UserChange{Disabled: &disabled}, audit("user_update"))
	wantErr(t, "disable the last admin", err, store.ErrLastAdmin)
	bogus := "root"
	_, err = st.Accounts.UpdateUser(ctx, op.ID, store.UserChange{Role: &bogus}, audit("user_update"))
	wantErr(t, "UpdateUser to an unknown role", err, store.ErrInvalid)
	_, err = st.Accounts.UpdateUser(ctx, op.ID, store.UserChange{Role: &viewer}, badAudit("user_update"))
	wantErr(t, "UpdateUser, audit refused", err, store.ErrBadCharacter)
	if u, _ := st.Accounts.UserByID(ctx, op.ID); u.Role != store.RoleOperator || d.audits("user_update") != 0 {
		t.Fatal("a refused update changed the user or wrote an event")
	}

	// A new password or disabling revokes the user's refresh tokens; a role change does not.
	token := func(u store.User) string {
		jti := newUUID()
		wantErr(t, "CreateRefreshToken", st.Accounts.CreateRefreshToken(ctx, store.RefreshToken{JTI: jti, Family: newUUID(), UserID: u.ID,
			ExpiresAt: time.Now().Add(time.Hour), FamilyExpiresAt: time.Now().Add(24 * time.Hour)}), nil)
		return jti
	}
	live := func(jti string) bool { return d.count("refresh_tokens", "jti = $1 AND revoked_at IS NULL", jti) == 1 }
	t1 := token(op)
	u, err := st.Accounts.UpdateUser(ctx, op.ID, store.UserChange{Role: &viewer}, audit("user_update"))
	wantErr(t, "UpdateUser role", err, nil)
	if u.Role != store.RoleViewer || !live(t1) {
		t.Fatalf("role change: role %q, token live %v", u.Role, live(t1))
	}
	hash := "hash-new"
	u, err = st.Accounts.UpdateUser(ctx, op.ID, store.UserChange{PasswordHash: &hash}, audit("user_update"))
	wantErr(t, "UpdateUser password", err, nil)
	if u.PasswordHash != hash || !u.PasswordChangedAt.After(op.PasswordChangedAt) || live(t1) {
		t.Fatal("a new password was not stored, its time not moved, or the user's tokens stayed live")
	}
	t2 := token(op)
	u, err = st.Accounts.UpdateUser(ctx, op.ID, store.UserChange{Disabled: &disabled}, audit("user_update"))
	wantErr(t, "UpdateUser disable", err, nil)
	if !u.Disabled || live(t2) {
		t.Fatal("disabling did not disable or left the user's tokens live")
	}
	if n := d.count("audit_events", "action = 'user_update' AND target = $1", "user:"+op.ID); n != 3 {
		t.Fatalf("%d update events, want 3", n)
	}
	// With a second admin, the first may step down.
	op2 := store.RoleAdmin
	if _, err := st.Accounts.UpdateUser(ctx, op.ID, store.UserChange{Role: &op2, Disabled: new(bool)}, audit("user_update")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Accounts.UpdateUser(ctx, adm.ID, store.UserChange{Role: &viewer}, audit("user_update")); err != nil {
		t.Fatalf("demoting one of two admins: %v", err)
	}
}

// testRefreshTokens: CreateRefreshToken, RotateRefreshToken (one spend per token, replay revokes the
// family, the family's end), RevokeFamily, RefreshFamilyOf.
func testRefreshTokens(t *testing.T, d *db) {
	ctx, st := d.ctx, d.st
	u, err := st.Accounts.CreateUser(ctx, "u@example.com", "h", store.RoleViewer, audit("user_create"))
	wantErr(t, "CreateUser", err, nil)
	famEnd := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	first := store.RefreshToken{JTI: newUUID(), Family: newUUID(), UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour), FamilyExpiresAt: famEnd}
	wantErr(t, "CreateRefreshToken", st.Accounts.CreateRefreshToken(ctx, first), nil)
	// Conflict: a jti is used once; invalid: an unknown user or a malformed id.
	wantErr(t, "CreateRefreshToken again", st.Accounts.CreateRefreshToken(ctx, first), store.ErrConflict)
	orphan := first
	orphan.JTI, orphan.UserID = newUUID(), unknownUUID
	wantErr(t, "CreateRefreshToken for an unknown user", st.Accounts.CreateRefreshToken(ctx, orphan), store.ErrInvalid)
	orphan.UserID = "nope"
	wantErr(t, "CreateRefreshToken with a malformed user id", st.Accounts.CreateRefreshToken(ctx, orphan), store.ErrMalformed)

	fam, user, err := st.Accounts.RefreshFamilyOf(ctx, first.JTI)
	wantErr(t, "RefreshFamilyOf", err, nil)
	if fam != first.Family || user != u.ID {
		t.Fatalf("RefreshFamilyOf = %s, %s", fam, user)
	}
	for _, jti := range []string{unknownUUID, "nope"} {
		_, _, err := st.Accounts.RefreshFamilyOf(ctx, jti)
		wantErr(t, "RefreshFamilyOf("+jti+")", err, store.ErrNotFound)
	}

	// Rotation: the new token stays in the family and never outlives it.
	second := newUUID()
	r, err := st.Accounts.RotateRefreshToken(ctx, u.ID, first.JTI, second, time.Now(), 24*time.Hour)
	wantErr(t, "RotateRefreshToken", err, nil)
	if r.Token.JTI != second || r.Token.Family != first.Family || !r.Token.ExpiresAt.Equal(famEnd) || r.User.ID != u.ID {
		t.Fatalf("RotateRefreshToken = %+v", r.Token)
	}
	third := newUUID()
	_, err = st.Accounts.RotateRefreshToken(ctx, u.ID, second, second, time.Now(), time.Hour)
	wantErr(t, "RotateRefreshToken to a jti in use", err, store.ErrConflict)
	if _, err := st.Accounts.RotateRefreshToken(ctx, u.ID, second, third, time.Now(), time.Hour); err != nil {
		t.Fatalf("a rotation refused for a taken jti spent the token: %v", err)
	}
	// Replay: presenting a spent token revokes the whole family.
	_, err = st.Accounts.RotateRefreshToken(ctx, u.ID, first.JTI, newUUID(), time.Now(), time.Hour)
	wantErr(t, "RotateRefreshToken replay", err, store.ErrTokenReused)
	if n := d.count("refresh_tokens", "family = $1 AND revoked_at IS NULL", first.Family); n != 0 {
		t.Fatalf("%d tokens of a replayed family still live", n)
	}
	_, err = st.Accounts.RotateRefreshToken(ctx, u.ID, third, newUUID(), time.Now(), time.Hour)
	wantErr(t, "RotateRefreshToken in a revoked family", err, store.ErrNotFound)
	// Not found: unknown, malformed, another user's, expired.
	other, err := st.Accounts.CreateUser(ctx, "o@example.com", "h", store.RoleViewer, audit("user_create"))
	wantErr(t, "CreateUser", err, nil)
	expired := store.RefreshToken{JTI: newUUID(), Family: newUUID(), UserID: u.ID, ExpiresAt: time.Now().Add(-time.Second), FamilyExpiresAt: famEnd}
	wantErr(t, "CreateRefreshToken expired", st.Accounts.CreateRefreshToken(ctx, expired), nil)
	fresh := store.RefreshToken{JTI: newUUID(), Family: newUUID(), UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour), FamilyExpiresAt: famEnd}
	wantErr(t, "CreateRefreshToken", st.Accounts.CreateRefreshToken(ctx, fresh), nil)
	for name, c := range map[string][2]string{
		"unknown": {u.ID, unknownUUID}, "malformed": {u.ID, "nope"}, "another user's": {other.ID, fresh.JTI}, "expired": {u.ID, expired.JTI},
	} {
		_, err := st.Accounts.RotateRefreshToken(ctx, c[0], c[1], newUUID(), time.Now(), time.Hour)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RotateRefreshToken of a%s token: %v, want ErrNotFound", " "+name, err)
		}
	}

	// RevokeFamily.
	wantErr(t, "RevokeFamily", st.Accounts.RevokeFamily(ctx, fresh.Family), nil)
	_, err = st.Accounts.RotateRefreshToken(ctx, u.ID, fresh.JTI, newUUID(), time.Now(), time.Hour)
	wantErr(t, "RotateRefreshToken after RevokeFamily", err, store.ErrNotFound)
	wantErr(t, "RevokeFamily malformed", st.Accounts.RevokeFamily(ctx, "nope"), store.ErrNotFound)
	wantErr(t, "RevokeFamily unknown", st.Accounts.RevokeFamily(ctx, unknownUUID), nil)
}
