package failover_test

import (
	"testing"
	"time"

	"github.com/iotauth/iotauth/test/harness"
)

// TestStalePooledConnections: every connection in the API's pool dies at once while idle (the server
// ends them, as a failover or restart does); the very next requests — an authenticated write and a
// read, each starting with a read of the caller — succeed on fresh connections instead of answering
// 503 "unexpected EOF" once per dead connection.
func TestStalePooledConnections(t *testing.T) {
	t.Parallel()
	p, err := harness.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Destroy)
	dsn := p.NewDatabase(t)
	st := harness.OpenStore(t, dsn)
	a := startAPI(t, dsn, dsn)
	agents := make([]harness.Agent, 3)
	for i := range agents {
		agents[i] = harness.CreateAgent(t, st, "agent")
	}
	for i, ag := range agents {
		// Warm the pool (several connections, used within the last second, so none is pinged before
		// reuse), end every connection of the API behind its back, then write at once.
		for range 4 {
			go a.call("GET", "/api/v1/agents", nil, nil)
		}
		if r := a.call("GET", "/api/v1/agents", nil, nil); r.status != 200 {
			t.Fatalf("list agents: %d %s", r.status, r.body)
		}
		var ended []int32
		if err := harness.QueryRowErr(p.AdminDSN, `WITH api AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = 'iotauth' AND pid <> pg_backend_pid())
 SELECT coalesce(array_agg(pid), '{}') FROM api WHERE pg_terminate_backend(pid)`).Scan(&ended); err != nil {
			t.Fatal(err)
		}
		if len(ended) == 0 {
			t.Fatal("the API holds no connection to end")
		}
		// pg_terminate_backend does not wait for the backends to exit.
		if !eventually(10*time.Second, func() bool {
			var left int
			return harness.QueryRowErr(p.AdminDSN, `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)`, ended).Scan(&left) == nil && left == 0
		}) {
			t.Fatal("the API's connections did not end")
		}
		if r := a.revoke(ag.KeyID); !r.ok() {
			t.Fatalf("round %d: the first write after %d pooled connections died: %d %q %s", i, len(ended), r.status, r.code, r.body)
		}
		if r := a.call("GET", "/api/v1/agents/"+ag.UUID, nil, nil); r.status != 200 {
			t.Fatalf("round %d: a read after the pool's connections died: %d %s", i, r.status, r.body)
		}
	}
}
