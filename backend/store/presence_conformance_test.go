package store_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/test/harness"
)

// TestPresenceWriteRoundTrip writes sessions whose strings hold every character that means something in
// an array literal (the batch travels as text) and reads them back as they were: times to the
// microsecond, NULL ends and reasons of live sessions, an end closing a row written by an earlier batch.
// The batch goes through a prepared statement, or as strings through pgx's Exec when the pool must not
// prepare (default_query_exec_mode, as behind PgBouncer in transaction mode).
func TestPresenceWriteRoundTrip(t *testing.T) {
	for _, mode := range []string{"", "simple_protocol", "exec"} {
		t.Run("mode="+mode, func(t *testing.T) {
			d := newDB(t)
			if mode != "" {
				dsn := pg.NewDatabase(t)
				sep := "?"
				if strings.Contains(dsn, "?") {
					sep = "&"
				}
				d.st = harness.OpenStore(t, dsn+sep+"default_query_exec_mode="+mode)
				raw, err := pgxpool.New(context.Background(), dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(raw.Close)
				d.raw = raw
			}
			presenceRoundTrip(t, d)
		})
	}
}

func presenceRoundTrip(t *testing.T, d *db) {
	const broker, inc = `broker "1"`, "3b7f5a62-0f4e-4c59-9a55-3a1f3a0c9d11"
	if _, err := d.st.Presence.PresenceStart(d.ctx, broker, inc, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 7, 23, 40, 54, 123456789, time.UTC)
	end := at.Add(1500 * time.Millisecond)
	odd := []string{`a"b`, `back\slash`, `{braces},comma`, "NULL", "", " spaced ", "ünïcødé ✓", `\"}{,`}
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), {}, netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("::ffff:10.1.2.3")}
	var rows []store.PresenceRow
	for i, s := range odd {
		r := store.PresenceRow{Seq: int64(i + 1), Kind: store.PrincipalApp, Principal: "p" + s, ClientID: s,
			Protocol: "mqtt3.1.1", Remote: addrs[i%len(addrs)], ConnectedAt: at.Add(time.Duration(i) * time.Microsecond)}
		if i%2 == 1 {
			e := end
			r.DisconnectedAt, r.Reason = &e, "keepalive"
		}
		rows = append(rows, r)
	}
	if err := d.st.Presence.PresenceWrite(d.ctx, broker, inc, rows); err != nil {
		t.Fatal(err)
	}
	// A later batch ends the first session, and an empty batch is a heartbeat.
	first := rows[0]
	first.DisconnectedAt, first.Reason = &end, "client"
	if err := d.st.Presence.PresenceWrite(d.ctx, broker, inc, []store.PresenceRow{first}); err != nil {
		t.Fatal(err)
	}
	if err := d.st.Presence.PresenceWrite(d.ctx, broker, inc, nil); err != nil {
		t.Fatal(err)
	}
	rows[0] = first
	for _, want := range rows {
		var kind, pid, cid, proto, addr string
		var ca time.Time
		var da *time.Time
		var reason *string
		err := d.raw.QueryRow(d.ctx, `SELECT principal_kind, principal_id, client_id, protocol, remote_address, connected_at,
  disconnected_at, reason FROM presence_sessions WHERE incarnation = $1 AND seq = $2 AND broker_id = $3`, inc, want.Seq, broker).
			Scan(&kind, &pid, &cid, &proto, &addr, &ca, &da, &reason)
		if err != nil {
			t.Fatalf("session %d: %v", want.Seq, err)
		}
		if kind != want.Kind || pid != want.Principal || cid != want.ClientID || proto != want.Protocol || addr != remote(want.Remote) {
			t.Errorf("session %d read back as %q %q %q %q %q; want %q %q %q %q %q", want.Seq, kind, pid, cid, proto, addr,
				want.Kind, want.Principal, want.ClientID, want.Protocol, remote(want.Remote))
		}
		if !ca.Equal(want.ConnectedAt.Truncate(time.Microsecond)) {
			t.Errorf("session %d connected at %v; want %v", want.Seq, ca, want.ConnectedAt.Truncate(time.Microsecond))
		}
		switch {
		case want.DisconnectedAt == nil:
			if da != nil || reason != nil {
				t.Errorf("session %d is live but reads ended at %v (%v)", want.Seq, da, reason)
			}
		case da == nil || reason == nil:
			t.Errorf("session %d ended but reads live", want.Seq)
		case !da.Equal(want.DisconnectedAt.Truncate(time.Microsecond)) || *reason != want.Reason:
			t.Errorf("session %d ended at %v (%s); want %v (%s)", want.Seq, *da, *reason, *want.DisconnectedAt, want.Reason)
		}
	}
}

// remote is an address as presence_sessions holds it: "" when unknown.
func remote(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
