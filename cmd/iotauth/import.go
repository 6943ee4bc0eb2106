package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/iotauth/iotauth/backend/legacyimport"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/plugin/acl"
)

func init() {
	register("import", "import an existing fleet (Mosquitto password_file, mosquitto-go-auth CSV, plain CSV): devices keep their username and password", importCmd)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ", ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

const importUsage = `usage: iotauth import [flags] FILE     (FILE "-" reads standard input)

Imports the devices of an existing Mosquitto fleet. Each username becomes an active agent whose device
keeps connecting with its EXISTING username and password (the plugin accepts imported usernames only).
Every line is checked first; a file with any bad line imports nothing unless -skip-invalid is given.
Importing a username again updates its hash, client id rule and topics (or reports it unchanged); a
username moved to iotauth keys (agent rotate-password) is reported as retired and never revived.

Formats:
  passwd   Mosquitto password_file as written by mosquitto_passwd ($7$ PBKDF2-SHA512, $6$ SHA-512)
  go-auth  CSV export of mosquitto-go-auth's user table (PBKDF2$sha512$..., bcrypt $2a$/$2b$); a header
           row names the username and password_hash columns
  csv      username,password_hash[,acl...]  (any hash iotauth reads; acl: "[read|write|readwrite|deny ]pattern")

`

type importReport struct {
	File     string                      `json:"file"`
	Format   string                      `json:"format"`
	DryRun   bool                        `json:"dryRun"`
	Invalid  []string                    `json:"invalid"`
	Counts   map[store.ImportOutcome]int `json:"counts"`
	Agents   []store.ImportedAgent       `json:"agents"`
	Accounts int                         `json:"accounts"`
}

func importCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("import", stderr)
	format := fs.String("format", "passwd", "input format: passwd, go-auth or csv")
	clientID := fs.String("clientid", "any", `client id rule: "any" (any id but an agent's) or a template with %u, the legacy username (e.g. %u)`)
	var topics stringList
	fs.Var(&topics, "topic", `topic rule every imported device gets, "[access ]pattern" with %u = legacy username (repeatable; e.g. 'devices/%u/#')`)
	salt := fs.String("salt-encoding", "base64", "go-auth's auth_opt_hasher_salt_encoding: base64 (its default) or utf-8")
	skip := fs.Bool("skip-invalid", false, "import the good lines of a file that has bad ones (each bad line is still reported)")
	dry := fs.Bool("dry-run", false, "check the file and report; change nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	db := addDBFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), importUsage)
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args, 1, "[flags] FILE")
	if err != nil {
		return err
	}
	path := pos[0]
	var in io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open the import file: %w", err)
		}
		defer f.Close()
		in = f
	}
	accounts, bad, err := legacyimport.Parse(in, legacyimport.Options{
		Format: legacyimport.Format(*format), ClientID: *clientID, Topics: topics, SaltEncoding: *salt,
		CheckRule: func(access, pattern string) error { _, err := acl.ParseTemplate(access, pattern); return err },
	})
	if err != nil {
		return err
	}
	rep := importReport{File: filepath.Base(path), Format: *format, DryRun: *dry, Invalid: []string{}, Accounts: len(accounts)}
	for _, b := range bad {
		rep.Invalid = append(rep.Invalid, b.Error())
		fmt.Fprintf(stderr, "invalid: %v\n", b)
	}
	if len(bad) > 0 && !*skip {
		return fmt.Errorf("%d invalid line(s) (listed above); nothing was imported. Fix them, or pass -skip-invalid to import the %d good line(s)", len(bad), len(accounts))
	}
	if !*dry {
		st, err := storeFor(ctx, db, stderr)
		if err != nil {
			return err
		}
		defer st.Close()
		la := make([]store.LegacyAccount, len(accounts))
		for i, a := range accounts {
			la[i] = store.LegacyAccount{Username: a.Username, PasswordHash: a.PasswordHash, ClientID: a.ClientID, Line: a.Line}
			for _, r := range a.Rules {
				la[i].Rules = append(la[i].Rules, store.LegacyRule{Access: r.Access, Pattern: r.Pattern})
			}
		}
		audit := cliAudit("legacy_import")
		audit.Target = "import:" + rep.File
		audit.Detail = map[string]any{"format": *format, "file": rep.File, "invalidSkipped": len(bad), "clientId": *clientID, "topics": []string(topics)}
		res, err := st.Credentials.ImportLegacy(ctx, la, audit)
		if err != nil {
			return fmt.Errorf("import failed, nothing was imported: %w", err)
		}
		rep.Counts, rep.Agents = res.Counts, res.Agents
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if *dry {
		fmt.Fprintf(stdout, "dry run: %d account(s) would be imported, %d invalid line(s)\n", len(accounts), len(bad))
		return nil
	}
	for _, a := range rep.Agents {
		fmt.Fprintf(stdout, "%-9s %s agent %s (line %d)\n", a.Outcome, a.Username, a.AgentUUID, a.Line)
	}
	fmt.Fprintf(stdout, "imported %s: %d created, %d updated, %d unchanged, %d retired (not revived), %d invalid line(s) skipped\n",
		rep.File, rep.Counts[store.ImportCreated], rep.Counts[store.ImportUpdated], rep.Counts[store.ImportUnchanged],
		rep.Counts[store.ImportRetired], len(bad))
	return nil
}
