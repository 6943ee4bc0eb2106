package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/license"
	"github.com/iotauth/iotauth/backend/store"
)

// bulkFlags are `agent create`'s flags for bulk creation.
type bulkFlags struct {
	count         int
	prefix        string
	format        string
	out           string
	batch         int
	explicitlySet bool
}

// set reports whether any bulk-only flag was given (which needs --count).
func (b *bulkFlags) set(fs *flag.FlagSet) bool {
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name-prefix", "format", "out", "batch-size":
			b.explicitlySet = true
		}
	})
	return b.explicitlySet
}

// bulkRecord is one line of `agent create --count`'s output: the MQTT username is the API key.
type bulkRecord struct {
	AgentUUID    string `json:"agentUuid"`
	Name         string `json:"name"`
	KeyID        string `json:"keyId"`
	APIKey       string `json:"apiKey"`
	MQTTPassword string `json:"mqttPassword"`
	ClientID     string `json:"clientId"`
}

var csvHeader = []string{"agent_uuid", "name", "key_id", "api_key", "mqtt_password", "client_id"}

func agentCreateBulk(ctx context.Context, b bulkFlags, env string, expires time.Duration, db *dbFlags, stdout, stderr io.Writer) error {
	switch {
	case b.count < 1 || b.count > 1_000_000:
		fmt.Fprintln(stderr, "--count must be 1 to 1000000")
		return errUsage
	case b.format != "jsonl" && b.format != "csv":
		fmt.Fprintln(stderr, "--format must be jsonl or csv")
		return errUsage
	case b.batch < 1 || b.batch > 10000:
		fmt.Fprintln(stderr, "--batch-size must be 1 to 10000")
		return errUsage
	case len(b.prefix) > 180:
		fmt.Fprintln(stderr, "--name-prefix must be at most 180 bytes")
		return errUsage
	}
	kind, err := secret.APIKeyKind(env)
	if err != nil {
		return err
	}
	// The license, as `iotauth serve` reads it: restricted mode refuses, a device limit is enforced.
	policy, err := license.PolicyFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	m, err := license.EnvSource(os.Getenv)()
	if err != nil {
		return err
	}
	lic := license.Evaluate(m, policy, time.Now())
	if lic.Restricted {
		return refused("the license does not allow new registrations (%s): %s; bulk creation respects the license (one agent with -name does not)", lic.Reason, lic.Message)
	}
	p := store.BulkAgents{Count: b.count, NamePrefix: b.prefix, KeyKind: kind, BatchSize: b.batch, Audit: cliAudit("agent_create")}
	if lic.MaxDevices != nil {
		p.MaxDevices, p.Limited = *lic.MaxDevices, true
	}
	if expires > 0 {
		p.Expires = time.Now().Add(expires)
	}
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()

	// The whole count is checked before anything else exists (the store checks it again, and every batch
	// under the registration lock): a refusal leaves no agent and no output file behind.
	if p.Limited {
		n, err := st.Agents.CountAgents(ctx)
		if err != nil {
			return fmt.Errorf("nothing was created: could not count the registered agents: %w", err)
		}
		if n+b.count > p.MaxDevices {
			return refused("nothing was created: the license allows %d devices and %d are registered, so there is no room for %d more (%w); "+
				"create at most %d, decommission agents, or install a license with a higher maxDevices", p.MaxDevices, n, b.count, store.ErrDeviceLimit, max(0, p.MaxDevices-n))
		}
	}

	// The output exists before any agent does: a file that cannot be made stops everything.
	w := stdout
	var file *os.File
	if b.out != "" {
		if file, err = os.OpenFile(b.out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return fmt.Errorf("--out: %w (it is never overwritten: it would hold secrets; pick a new name)", err)
		}
		defer file.Close()
		w = file
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	cw := csv.NewWriter(bw)
	if b.format == "csv" {
		if err := cw.Write(csvHeader); err != nil {
			return err
		}
	}
	start := time.Now()
	created, err := st.Agents.CreateAgentsBulk(ctx, p, func(batch []store.BulkAgent) error {
		for _, a := range batch {
			r := bulkRecord{AgentUUID: a.AgentUUID, Name: a.Name, KeyID: a.KeyID, APIKey: a.APIKey.Reveal(),
				MQTTPassword: a.MQTTPassword.Reveal(), ClientID: "agent-" + a.AgentUUID}
			var err error
			if b.format == "csv" {
				err = cw.Write([]string{r.AgentUUID, r.Name, r.KeyID, r.APIKey, r.MQTTPassword, r.ClientID})
			} else {
				err = jsonLine(bw, r)
			}
			if err != nil {
				return err
			}
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if file != nil {
			return file.Sync()
		}
		return nil
	})
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		msg := fmt.Sprintf("%d of %d agents created before the failure", created, b.count)
		if created > 0 {
			msg += " (their credentials were written; those of a batch whose output failed may be lost: find them with 'iotauth audit tail --action agent_create' and rotate them)"
		} else {
			msg = "nothing was created"
			if file != nil {
				// The file is ours (O_EXCL) and empty: leave nothing that would make the same command
				// fail with "file exists" when it is run again.
				file.Close()
				if rmErr := os.Remove(b.out); rmErr != nil {
					msg += fmt.Sprintf(" (the empty --out file could not be removed: %v)", rmErr)
				}
			}
		}
		if errors.Is(err, store.ErrDeviceLimit) {
			return refused("%s: %w", msg, err)
		}
		return fmt.Errorf("%s: %w", msg, err)
	}
	if file != nil {
		if err := file.Close(); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	fmt.Fprintf(stderr, "created %d agents in %v\n", created, took)
	return nil
}
