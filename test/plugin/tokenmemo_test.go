package plugin_test

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// A credential the plugin has verified and remembers is still refused at once when its subject is
// denied, and after SIGHUP has re-read a key file without its signing key (the memo is emptied).
func TestRememberedTokenStillRevocable(t *testing.T) {
	t.Parallel()
	keys := newTokenKeys(t)
	next := newTokenKeys(t)
	e := tokenEnv(t, keys, [2]string{"log_level", "debug"})
	denied := keys.issue(t, grant("web-", []string{"user:denied"}, "read a/#"))
	kept := keys.issue(t, grant("web-", []string{"user:kept"}, "read a/#"))
	for i := range 3 { // the first connect verifies, the others are answered from memory
		for _, c := range []struct{ user, pass string }{{denied.Username, denied.Password}, {kept.Username, kept.Password}} {
			if err := connectOnce(t, e.b, c.user, c.pass, "web-"+string(rune('a'+i))); err != nil {
				t.Fatalf("connect %d: %v", i, err)
			}
		}
	}

	e.exec(`SELECT iotauth_deny($1, 't')`, "user:denied")
	if !e.b.WaitLog("subject denial handled subject=user:denied", 10*time.Second) {
		t.Fatal("the denial was not handled")
	}
	refused(t, connectOnce(t, e.b, denied.Username, denied.Password, "web-x"), "a remembered credential of a denied subject")
	if err := connectOnce(t, e.b, kept.Username, kept.Password, "web-y"); err != nil {
		t.Fatalf("a remembered credential of another subject: %v", err)
	}

	// Rotate the key out: the file now holds only the next key.
	b, err := os.ReadFile(next.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys.path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !e.b.WaitLog("MQTT credential public keys read", 10*time.Second) {
		t.Fatal("SIGHUP did not re-read the key file")
	}
	refused(t, connectOnce(t, e.b, kept.Username, kept.Password, "web-z"), "a remembered credential of a key removed by SIGHUP")
}
