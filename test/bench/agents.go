package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/iotauth/iotauth/backend/core/passhash"
	"github.com/iotauth/iotauth/backend/core/secret"
)

// Agent is a benchmark agent with its plaintext secrets.
type Agent struct {
	UUID     string
	Key      string
	Password string
}

// ClientID is the client id the plugin's default clientid template (agent-%u) expects.
func (a Agent) ClientID() string { return "agent-" + a.UUID }

// Topic is a topic in the agent's own namespace (the default ACL grants agents/%u/#).
func (a Agent) Topic() string { return "agents/" + a.UUID + "/bench" }

// Filter is the subscription filter for the agent's namespace.
func (a Agent) Filter() string { return "agents/" + a.UUID + "/#" }

// populateChunk is how many agents go into one transaction.
const populateChunk = 20000

type agentRow struct {
	uuid   [16]byte
	a      Agent
	digest secret.Digest
	prefix string
	hash   string
}

// Populate inserts n active agents, each with one API key and an MQTT password, straight into the
// database at dsn with COPY, computing the digests the way the REST API does (secret.DigestOf,
// secret.DisplayPrefix, passhash.SHA256Hex). It is orders of magnitude faster than store.CreateAgent one
// by one. keep, when not nil, receives every agent with its secrets. Triggers (the change NOTIFY and the
// foreign-key checks) are switched off for the session when the role may do so (a superuser, as in the
// throwaway cluster): nothing is listening for new agents, and the rows are consistent by construction.
func Populate(ctx context.Context, dsn string, n int, keep func(Agent)) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, _ = conn.Exec(ctx, "SET session_replication_role = replica")
	var rows []agentRow
	for done := 0; done < n; done += populateChunk {
		m := min(populateChunk, n-done)
		rows, err = makeRows(rows[:0], m)
		if err != nil {
			return err
		}
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return copyRows(ctx, tx, rows, done) }); err != nil {
			return fmt.Errorf("insert agents: %w", err)
		}
		if keep != nil {
			for i := range rows {
				keep(rows[i].a)
			}
		}
	}
	_, err = conn.Exec(ctx, "ANALYZE agents; ANALYZE api_keys; ANALYZE mqtt_credentials")
	return err
}

// makeRows generates m agents' secrets and digests on every core.
func makeRows(rows []agentRow, m int) ([]agentRow, error) {
	rows = append(rows, make([]agentRow, m)...)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < m; i += workers {
				r := &rows[i]
				if _, err := rand.Read(r.uuid[:]); err != nil {
					errs[w] = err
					return
				}
				r.uuid[6] = r.uuid[6]&0x0f | 0x40
				r.uuid[8] = r.uuid[8]&0x3f | 0x80
				key, err := secret.Generate(secret.APIKey)
				if err != nil {
					errs[w] = err
					return
				}
				pw, err := secret.Generate(secret.MQTTPassword)
				if err != nil {
					errs[w] = err
					return
				}
				r.a = Agent{UUID: uuidString(r.uuid), Key: key.Reveal(), Password: pw.Reveal()}
				r.digest = secret.DigestOf(r.a.Key)
				r.prefix = secret.DisplayPrefix(secret.APIKey, r.a.Key)
				r.hash = passhash.SHA256Hex(r.a.Password)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return rows, nil
}

func copyRows(ctx context.Context, tx pgx.Tx, rows []agentRow, offset int) error {
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"agents"}, []string{"uuid", "name"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			return []any{rows[i].uuid, fmt.Sprintf("bench-%d", offset+i)}, nil
		}))
	if err != nil {
		return err
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"api_keys"}, []string{"agent_uuid", "name", "digest", "prefix"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			return []any{rows[i].uuid, "bench", rows[i].digest[:], rows[i].prefix}, nil
		}))
	if err != nil {
		return err
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"mqtt_credentials"}, []string{"agent_uuid", "password_hash"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			return []any{rows[i].uuid, rows[i].hash}, nil
		}))
	return err
}

func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}
