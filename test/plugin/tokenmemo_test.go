package plugin_test

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// A credential the plugin has verified and remembers is still refused at once when its subject is
// denied, and after SIGHUP has re-read a key file without its signing key (the memo is emptied); the
// live session that key admitted is closed by that SIGHUP too, while one of a key still in the file stays.
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

	// Rotation: the file holds both keys, then only the next one; each SIGHUP re-reads it.
	oldPEM, err := os.ReadFile(keys.path)
	if err != nil {
		t.Fatal(err)
	}
	nextPEM, err := os.ReadFile(next.path)
	if err != nil {
		t.Fatal(err)
	}
	reload := func(pem []byte) {
		t.Helper()
		if err := os.WriteFile(keys.path, pem, 0o644); err != nil {
			t.Fatal(err)
		}
		before := strings.Count(e.b.Log(), "MQTT credential public keys read")
		if err := e.b.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); strings.Count(e.b.Log(), "MQTT credential public keys read") == before; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("SIGHUP did not re-read the key file")
			}
		}
	}
	reload(append(append([]byte{}, oldPEM...), nextPEM...))
	// A live session of the key about to be removed, and one of the key that stays.
	_, lost := watch(t, e.b, harness.Agent{Key: kept.Username, Password: kept.Password, ClientID: "web-live", UUID: "kept"})
	stays := next.issue(t, grant("web-", []string{"user:next"}, "read a/#"))
	_, stayLost := watch(t, e.b, harness.Agent{Key: stays.Username, Password: stays.Password, ClientID: "web-next", UUID: "next"})
	reload(nextPEM)
	refused(t, connectOnce(t, e.b, kept.Username, kept.Password, "web-z"), "a remembered credential of a key removed by SIGHUP")
	closedBy(t, lost, 10*time.Second, "the live session of a credential whose key SIGHUP removed")
	if err := connectOnce(t, e.b, stays.Username, stays.Password, "web-n2"); err != nil {
		t.Fatalf("a credential of the key that stays: %v", err)
	}
	select {
	case <-stayLost:
		t.Error("the live session of a credential of the key that stays was closed")
	default:
	}
}
