package failover_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// durableTimeout is the API's DURABLE_COMMIT_TIMEOUT in these tests; lag is how long the standby lags
// in the case where it catches up within it (with a wide margin for a loaded machine).
const (
	durableTimeout = 3 * time.Second
	lag            = 500 * time.Millisecond
)

// TestSynchronousStandby: with a synchronous standby configured (the settings docs/operations.md
// documents), a revocation is acknowledged only once the standby has it.
//   - Standby down: a revocation answers 503 commit_not_confirmed with Retry-After within the
//     timeout (plus slack), while reads, device polls (which stamp last use) and MQTT connects go on;
//     once the standby is back the same request succeeds.
//   - Standby lagging (its WAL receiver stopped): a revocation is answered only after the standby
//     caught up, or 503 when it does not within the timeout; after the primary is killed and the
//     standby promoted, every revocation that was answered 2xx is there, and its agent is refused on
//     both brokers.
func TestSynchronousStandby(t *testing.T) {
	t.Parallel()
	start := time.Now()
	pair := harness.StartReplicaPair(t, true)
	primaryDSN := pair.Primary.NewDatabase(t)
	db := harness.DatabaseName(t, primaryDSN)
	multi := harness.DSN(db, pair.Primary, pair.Standby)
	st := harness.OpenStore(t, primaryDSN)
	down := harness.CreateAgent(t, st, "revoked-while-standby-down")
	poller := harness.CreateAgent(t, st, "polls-while-standby-down")
	lagging := harness.CreateAgent(t, st, "revoked-while-standby-lags")
	stalled := harness.CreateAgent(t, st, "revoked-while-standby-stalled")
	a := startAPI(t, primaryDSN, multi, "DURABLE_COMMIT_TIMEOUT="+durableTimeout.String())
	b1, b2 := broker(t, multi), broker(t, multi)
	if !eventually(10*time.Second, func() bool {
		return strings.Contains(a.logs.String(), "acknowledged only once a synchronous standby confirms them")
	}) {
		t.Error("serve did not log that security changes wait for the synchronous standby")
	}
	t.Logf("setup took %v", time.Since(start))

	// Standby down. The revoked agent's live session closes while the API still waits for the standby:
	// the change commits on the primary at once, and only its acknowledgement waits.
	lost := watch(t, b1, down)
	if err := pair.Standby.Stop(); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	r := a.revoke(down.KeyID)
	if r.status != 503 || r.code != "commit_not_confirmed" || r.retryAfter == "" {
		t.Fatalf("revocation with the synchronous standby down: %d %q (Retry-After %q), want 503 commit_not_confirmed with Retry-After: %s",
			r.status, r.code, r.retryAfter, r.body)
	}
	kicked := closedWithin(t, lost, 5*time.Second, "the revoked agent's session with the standby down")
	if !kicked.Before(r.at) {
		t.Errorf("the revoked session closed %v after the 503: the revocation waited for the standby", kicked.Sub(r.at))
	}
	t.Logf("standby down: the revoked session closed %v after the request, the 503 came %v after it",
		kicked.Sub(sent).Round(time.Millisecond), r.at.Sub(sent).Round(time.Millisecond))
	t.Logf("standby down: revocation answered 503 after %v (DURABLE_COMMIT_TIMEOUT %v)", r.at.Sub(sent), durableTimeout)
	if took := r.at.Sub(sent); took > durableTimeout+8*time.Second {
		t.Errorf("the 503 took %v with DURABLE_COMMIT_TIMEOUT %v: the wait is not bounded", took, durableTimeout)
	}
	if r := a.call("GET", "/api/v1/agents", nil, nil); r.status != 200 {
		t.Errorf("listing agents with the standby down: %d %s", r.status, r.body)
	}
	if code := devicePoll(t, a, poller); code != 200 {
		t.Errorf("device poll with the standby down: %d", code)
	}
	for _, b := range []*harness.Broker{b1, b2} {
		if err := connectErr(b, poller.Key, poller.Password, poller.ClientID); err != nil {
			t.Errorf("MQTT connect to broker %d with the standby down: %v", b.Port, err)
		}
	}
	if err := pair.Standby.Start(); err != nil {
		t.Fatal(err)
	}
	pair.WaitStreaming(t, 60*time.Second)
	if r := a.revoke(down.KeyID); !r.ok() {
		t.Fatalf("revocation repeated once the standby is back: %d %s", r.status, r.body)
	}

	// Standby lagging: the answer waits for it.
	thaw := harness.Freeze(t, pair.Standby.WALReceiverPID(t))
	answer := make(chan reply, 1)
	go func() { answer <- a.revoke(lagging.KeyID) }()
	time.Sleep(lag) // how long the standby lags
	thawed := time.Now()
	thaw()
	r = <-answer
	if !r.ok() {
		t.Fatalf("revocation while the standby lagged %v (less than the timeout): %d %s", lag, r.status, r.body)
	}
	if r.at.Before(thawed) {
		t.Fatalf("the revocation was acknowledged %v before the lagging standby could have it", thawed.Sub(r.at))
	}
	t.Logf("standby lagging %v: revocation answered %v after it caught up", lag, r.at.Sub(thawed))

	// Standby stalled past the timeout, then the primary dies and the standby is promoted.
	thaw = harness.Freeze(t, pair.Standby.WALReceiverPID(t))
	r = a.revoke(stalled.KeyID)
	if r.status != 503 || r.code != "commit_not_confirmed" || r.retryAfter == "" {
		t.Fatalf("revocation while the standby is stalled: %d %q, want 503 commit_not_confirmed: %s", r.status, r.code, r.body)
	}
	if err := pair.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	thaw()
	failedAt := time.Now()
	if err := pair.Standby.Promote(); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	t.Logf("promotion took %v", promoted.Sub(failedAt))
	newPrimary := dbOn(pair.Standby, db)
	for _, k := range []harness.Agent{down, lagging} {
		if !revokedOn(t, newPrimary, k.KeyID) {
			t.Errorf("key %s: its revocation was acknowledged (2xx) but is missing after the failover", k.KeyID)
		}
	}
	t.Logf("the revocation answered 503 is on the new primary: %v (either is correct: it was never acknowledged)",
		revokedOn(t, newPrimary, stalled.KeyID))
	// The operator repeats the 503'd request: it succeeds on the new primary.
	if r := a.revoke(stalled.KeyID); !r.ok() {
		t.Fatalf("revocation repeated after the failover: %d %s", r.status, r.body)
	}
	t.Logf("revocation repeated on the new primary, answered %v after the promotion", time.Since(promoted))
	for _, b := range []*harness.Broker{b1, b2} {
		for _, k := range []harness.Agent{down, lagging, stalled} {
			var err error
			if !eventually(15*time.Second, func() bool {
				err = connectErr(b, k.Key, k.Password, k.ClientID)
				return notAuthorised(err)
			}) {
				t.Errorf("broker %d after the failover: revoked agent %s not refused (%v)", b.Port, k.UUID, err)
			}
		}
		if err := connectErr(b, poller.Key, poller.Password, poller.ClientID); err != nil {
			t.Errorf("broker %d after the failover: live agent refused: %v", b.Port, err)
		}
	}
	t.Logf("revoked agents refused and the live one admitted on both brokers %v after the promotion; whole test %v", time.Since(promoted), time.Since(start))
}

// devicePoll reads the agent's target state with its own key, as an agent polls; it returns the status.
func devicePoll(t *testing.T, a *api, ag harness.Agent) int {
	t.Helper()
	req, _ := http.NewRequest("GET", a.base+"/api/v1/device/"+ag.UUID+"/state", nil)
	req.Header.Set("X-Device-API-Key", ag.Key)
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
