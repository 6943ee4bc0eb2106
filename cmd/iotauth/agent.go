package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/agents"
	"github.com/iotauth/iotauth/backend/service/keys"
	"github.com/iotauth/iotauth/backend/store"
)

// agentCreated is what `agent create` prints: the secrets, shown this once.
type agentCreated struct {
	AgentUUID string    `json:"agentUuid"`
	KeyID     string    `json:"keyId"`
	APIKey    string    `json:"apiKey"`
	MQTT      mqttCreds `json:"mqtt"`
}

type mqttCreds struct {
	Username string `json:"username"`
	Password string `json:"password"`
	ClientID string `json:"clientId"`
}

func init() {
	register("agent create", "create an agent with a device API key and MQTT password (printed once, as JSON; not license-gated), or --count N at once (license-gated)", agentCreate)
	register("agent disable", "disable an agent: its sessions are closed and it cannot connect", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return agentStatus(ctx, "disable", "disabled", args, stdout, stderr)
	})
	register("agent enable", "re-enable a disabled agent", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return agentStatus(ctx, "enable", "active", args, stdout, stderr)
	})
	register("agent rotate-password", "give an agent a new MQTT password (printed once); an imported agent moves to iotauth keys; old sessions are closed", agentRotate)
	register("key revoke", "revoke a device API key by id: sessions using it are closed", keyRevoke)
}

// agentCreateLicenseNote is the CLI's licensing policy, shown in its help: the CLI is the operator's
// break-glass tool, run by someone who already holds the database credentials, so the license (which
// gates the REST API's registrations) does not stop it.
const agentCreateLicenseNote = `Licensing: one agent (-name) is the operator's break-glass tool and is NOT gated by the license.
It works in restricted mode and ignores the device limit, because whoever runs it already holds the
database credentials. Agents it creates count toward the limit: once the count reaches maxDevices,
REST self-registration (POST /api/v1/provision/agent) answers 403 device_limit_reached.

Bulk creation (--count N) is factory provisioning and respects the license, as REST registrations do:
it reads LICENSE_PUBLIC_KEY[_FILE] and LICENSE_KEY[_FILE] as 'iotauth serve' does, refuses in
restricted mode, and creates nothing when N more agents would pass maxDevices (exit 4). Secrets go to
standard output or --out FILE (created 0600, never overwritten) only, once.`

func agentCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent create", stderr)
	name := fs.String("name", "", "agent name (required without --count)")
	env := fs.String("key-env", "live", "key environment: live or test")
	expires := fs.Duration("expires-in", 0, "key lifetime, e.g. 720h (default: never expires)")
	var bulk bulkFlags
	fs.IntVar(&bulk.count, "count", 0, "create this many agents at once (bulk; see Licensing)")
	fs.StringVar(&bulk.prefix, "name-prefix", "agent-", "with --count: names are this prefix and a zero-padded number from 1")
	fs.StringVar(&bulk.format, "format", "jsonl", "with --count: jsonl or csv")
	fs.StringVar(&bulk.out, "out", "", "with --count: write the credentials to this new file (mode 0600) instead of standard output")
	fs.IntVar(&bulk.batch, "batch-size", 1000, "with --count: agents per transaction (1 to 10000)")
	db := addDBFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: iotauth agent create -name NAME [flags]\n       iotauth agent create --count N [--name-prefix P] [--format jsonl|csv] [--out FILE]\n\n%s\n\n", agentCreateLicenseNote)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if bulk.count != 0 || bulk.set(fs) {
		if *name != "" {
			fmt.Fprintln(stderr, "-name makes one agent, --count many (named by --name-prefix): give one of them")
			return errUsage
		}
		return agentCreateBulk(ctx, bulk, *env, *expires, db, stdout, stderr)
	}
	if *name == "" {
		fmt.Fprintln(stderr, "-name is required")
		fs.Usage()
		return errUsage
	}
	kind, err := secret.APIKeyKind(*env)
	if err != nil {
		return err
	}
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	var exp time.Time
	if *expires > 0 {
		exp = time.Now().Add(*expires)
	}
	a, err := agents.New(agents.StoreOf(st), agents.Config{KeyKind: kind}).Create(ctx, cliService(), *name, exp)
	if errors.Is(err, service.ErrInvalid) {
		return fmt.Errorf("the name must be 1 to 200 characters: %w", err)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(agentCreated{
		AgentUUID: a.AgentUUID, KeyID: a.KeyID, APIKey: a.APIKey.Reveal(),
		MQTT: mqttCreds{Username: a.APIKey.Reveal(), Password: a.MQTTPassword.Reveal(), ClientID: "agent-" + a.AgentUUID},
	})
}

// argAndStore parses a command that takes one argument and opens the store.
func argAndStore(ctx context.Context, name, what string, args []string, stderr io.Writer) (string, *store.Store, error) {
	fs := newFlags(name, stderr)
	db := addDBFlags(fs)
	pos, err := parseArgs(fs, args, 1, "[-database-url-file FILE] "+what)
	if err != nil {
		return "", nil, err
	}
	st, err := storeFor(ctx, db, stderr)
	return pos[0], st, err
}

func agentStatus(ctx context.Context, verb, status string, args []string, stdout, stderr io.Writer) error {
	uuid, st, err := argAndStore(ctx, "agent "+verb, "AGENT_UUID", args, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = agents.New(agents.StoreOf(st), agents.Config{}).SetStatus(ctx, cliService(), uuid, status)
	switch {
	case errors.Is(err, service.ErrNotFound):
		return notFound("no agent %q: check the uuid (iotauth agent list)", uuid)
	case errors.Is(err, service.ErrConflict):
		return refused("agent %q is decommissioned; that is final", uuid)
	case err != nil:
		return err
	}
	fmt.Fprintf(stdout, "agent %s is now %s\n", uuid, status)
	return nil
}

func agentRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent rotate-password", stderr)
	env := fs.String("key-env", "live", "key environment of the device API key made for an imported agent: live or test")
	db := addDBFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: iotauth agent rotate-password [flags] AGENT_UUID

Gives the agent a new MQTT password (printed once); sessions using the old one are closed.
For an imported agent (iotauth import) it moves the device to iotauth keys: a new device API key and
MQTT password are printed once, and the legacy username is retired, so that the old username stops
working and its live sessions are closed. The device then connects with the key as its username and
the client id agent-<uuid> (or whatever plugin_opt_clientid says).

`)
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args, 1, "[flags] AGENT_UUID")
	if err != nil {
		return err
	}
	uuid := pos[0]
	kind, err := secret.APIKeyKind(*env)
	if err != nil {
		return err
	}
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	moved, err := st.Credentials.MoveLegacyToKeys(ctx, uuid, kind, cliAudit("legacy_agent_moved"))
	if err == nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			agentCreated
			RetiredLegacyUsername string `json:"retiredLegacyUsername"`
		}{agentCreated{
			AgentUUID: uuid, KeyID: moved.KeyID, APIKey: moved.APIKey.Reveal(),
			MQTT: mqttCreds{Username: moved.APIKey.Reveal(), Password: moved.MQTTPassword.Reveal(), ClientID: "agent-" + uuid},
		}, moved.LegacyUsername})
	}
	if !errors.Is(err, store.ErrNoLegacyUsername) {
		return rotateError(uuid, err)
	}
	pw, err := agents.New(agents.StoreOf(st), agents.Config{}).RotatePassword(ctx, cliService(), uuid)
	if err != nil {
		return rotateError(uuid, err)
	}
	return json.NewEncoder(stdout).Encode(map[string]string{"agentUuid": uuid, "password": pw.Reveal()})
}

func rotateError(uuid string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, service.ErrNotFound):
		return notFound("no agent %q: check the uuid (iotauth agent list)", uuid)
	case errors.Is(err, store.ErrDecommissioned):
		return refused("agent %q is decommissioned; create a new agent instead", uuid)
	}
	return err
}

func keyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return revokeKey(ctx, "key revoke", args, stdout, stderr, deviceKeys,
		func(id string) error { return notFound("no API key %q: find its id with 'iotauth key list'", id) },
		func(id string, k store.APIKey) string {
			return fmt.Sprintf("key %s of agent %s revoked", id, k.AgentUUID)
		})
}

func deviceKeys(s *keys.Service) keys.Kind[store.APIKey, keys.DeviceKeyRequest] { return s.Device }
