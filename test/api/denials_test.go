package api_test

import (
	"context"
	"testing"
	"time"
)

// TestSubjectDenials is schema 006 (docs/security.md, A4): revoking an application key and disabling,
// re-roling or re-passwording a user deny their subjects for short-lived MQTT credentials, whoever
// writes the change (the API or plain SQL); a denial renews its time; the list prunes.
func TestSubjectDenials(t *testing.T) {
	e := newEnv(t)
	adm := e.admin()
	e.userWithRole("operator")
	uid := e.userID(adm.Access, "operator@example.com")
	k := e.createAppKey(adm.Access, map[string]any{"name": "svc", "rights": []string{"token:exchange"},
		"topics": []map[string]string{{"access": "read", "pattern": "agents/+/telemetry"}}})
	if n := e.count("subject_denials", ""); n != 0 {
		t.Fatalf("%d denials before any change", n)
	}
	start := time.Now().Add(-time.Minute)

	e.expect(req{Method: "DELETE", Path: "/api/v1/auth/app-keys/" + k.ID, Token: adm.Access}, 204, "")
	if e.count("subject_denials", "subject = $1", "app:"+k.ID) != 1 {
		t.Fatal("revoking an application key did not deny it")
	}
	e.expect(req{Method: "PATCH", Path: "/api/v1/users/" + uid, Token: adm.Access, Body: `{"disabled": true}`}, 200, "")
	if e.count("subject_denials", "subject = $1", "user:"+uid) != 1 {
		t.Fatal("disabling a user did not deny them")
	}
	var first time.Time
	ctx := context.Background()
	ds, err := e.st.Credentials.Denials(ctx, start)
	if err != nil || len(ds) != 2 {
		t.Fatalf("denials %v, %v", ds, err)
	}
	first = ds[1].DeniedAt
	e.exec(`UPDATE users SET role = 'viewer' WHERE id = $1::uuid`, uid)
	ds, err = e.st.Credentials.Denials(ctx, first)
	if err != nil || len(ds) != 1 || ds[0].Subject != "user:"+uid || !ds[0].DeniedAt.After(first) {
		t.Fatalf("a re-role in SQL did not renew the user's denial: %v, %v", ds, err)
	}
	if err := e.st.Credentials.DenySubject(ctx, "pk:123", "publishable key revoked"); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Credentials.DenySubject(ctx, "nocolon", ""); err == nil {
		t.Fatal("a subject without a kind was accepted")
	}
	if n, err := e.st.Credentials.PruneDenials(ctx, time.Now().Add(time.Minute)); err != nil || n != 3 {
		t.Fatalf("pruned %d, %v", n, err)
	}
}
