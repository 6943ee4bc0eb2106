package failover_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// detectionDelay is how long the cluster has no primary: an orchestrator's time to notice the
// primary died and promote the standby.
const detectionDelay = 8 * time.Second

// TestDelayedPromotion: the primary dies and the standby is promoted only detectionDelay later, with
// the API and two brokers on multi-host DSNs. Broker 2 reaches the standby through a gate that stays
// closed until after promotion (a partition healing).
//   - The first write after promotion (a revocation) succeeds: no 503 from a stale pooled connection.
//   - Broker 1 kicks the revoked agent within 2 s of the answer: its change feed reconnected within
//     a second of the new primary taking connections, not after a backoff of seconds.
//   - A revocation committed while broker 2 could not reach the new primary kicks its session within
//     2 s of the gate opening: the broker re-checks live sessions when its feed reconnects.
//   - Refused connects queued while there was no primary (their audit writes failed) are written to
//     the new primary's audit trail, not lost.
func TestDelayedPromotion(t *testing.T) {
	t.Parallel()
	start := time.Now()
	pair := harness.StartReplicaPair(t, true)
	primaryDSN := pair.Primary.NewDatabase(t)
	db := harness.DatabaseName(t, primaryDSN)
	g := newGate(t, "127.0.0.1:"+strconv.Itoa(pair.Standby.Port()))
	direct := harness.DSN(db, pair.Primary, pair.Standby)
	gated := harness.DSN(db, pair.Primary, g.addr)
	st := harness.OpenStore(t, primaryDSN)
	first := harness.CreateAgent(t, st, "revoked-after-promotion")
	missed := harness.CreateAgent(t, st, "revoked-while-broker-away")
	_, appKey, _, err := st.Keys.CreateAppKey(context.Background(), store.NewAppKeyParams{Name: "consumer",
		Topics: []store.AppTopic{{Access: "read", Pattern: "agents/+/telemetry"}}}, store.AuditEvent{Actor: "test", Action: "app_key_create"})
	if err != nil {
		t.Fatal(err)
	}
	a := startAPI(t, primaryDSN, direct)
	b1, b2 := broker(t, direct), broker(t, gated)
	firstLost := watch(t, b1, first)
	missedLost := watch(t, b2, missed)
	if r := a.call("GET", "/api/v1/agents", nil, nil); r.status != 200 { // the API's pool holds connections to the primary
		t.Fatalf("list agents: %d %s", r.status, r.body)
	}
	t.Logf("setup took %v", time.Since(start))

	if err := pair.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// No primary: an application key's refused connects (a wrong password, answered from the cache)
	// are queued for the audit trail; writing them fails until a primary is back.
	const refusals = 3
	for i := range refusals {
		if err := connectErr(b1, appKey.Reveal(), "iotmp_wrongwrongwrongwrongwrongwrongwrong", "consumer-"+strconv.Itoa(i)); !notAuthorised(err) {
			t.Fatalf("application key with a wrong password: %v, want not authorised", err)
		}
	}
	if !b1.WaitLog("they are kept and written when PostgreSQL answers", 15*time.Second) {
		t.Fatal("broker 1 did not report keeping the audit events it could not write")
	}
	time.Sleep(time.Until(killed.Add(detectionDelay)))
	if err := pair.Standby.Promote(); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	r := a.revoke(first.KeyID)
	if !r.ok() {
		t.Fatalf("first write after the failover: %d %q %s", r.status, r.code, r.body)
	}
	at := closedWithin(t, firstLost, 15*time.Second, "agent revoked just after promotion, on broker 1")
	kick := at.Sub(r.at)
	t.Logf("promotion to revocation answered: %v; answer to kick: %v (primary down %v before promotion)",
		r.at.Sub(promoted), kick, promoted.Sub(killed))
	if kick > 2*time.Second {
		t.Errorf("the revocation kicked %v after it was answered, want within about a second (the change feed must reconnect within 1 s of a new primary)", kick)
	}

	// Broker 2 cannot reach the new primary yet: this revocation commits while its feed is away.
	if r := a.revoke(missed.KeyID); !r.ok() {
		t.Fatalf("revocation while broker 2 is cut off: %d %s", r.status, r.body)
	}
	opened := time.Now()
	g.open()
	at = closedWithin(t, missedLost, 15*time.Second, "agent revoked while broker 2 was cut off")
	t.Logf("gate opened to kick on broker 2: %v", at.Sub(opened))
	if d := at.Sub(opened); d > 2*time.Second {
		t.Errorf("broker 2 kicked the agent revoked while it was away %v after it could reach the new primary, want within about a second", d)
	}
	if !b2.WaitLog("credential change feed reconnected", 5*time.Second) {
		t.Error("broker 2 did not log its change feed reconnecting")
	}

	// The refused connects kept while there was no primary reach the new one's audit trail.
	newPrimary := dbOn(pair.Standby, db)
	var n int
	if !eventually(15*time.Second, func() bool {
		return harness.QueryRowErr(newPrimary, `SELECT count(*) FROM audit_events WHERE action = 'app_key_refused'`).Scan(&n) == nil && n >= refusals
	}) {
		t.Fatalf("%d of %d refused connects made while there was no primary are in the audit trail", n, refusals)
	}
	if !b1.WaitLog("wrote the refused connects and kicks kept while PostgreSQL did not answer", 5*time.Second) {
		t.Error("broker 1 did not log writing the audit events it kept")
	}
	if strings.Contains(b1.Log()+b2.Log(), "they are lost") {
		t.Error("a broker lost audit events")
	}
	t.Logf("whole test %v", time.Since(start))
}
