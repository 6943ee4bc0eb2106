package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iotauth/iotauth/backend/core/uuid"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/keys"
	"github.com/iotauth/iotauth/backend/service/users"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/view"
)

func init() {
	register("agent list", "list agents (newest last; decommissioned ones only with --status decommissioned)", agentList)
	register("agent show", "show one agent: status, target and reported state, its device API keys (prefixes only)", agentShow)
	register("key list", "list device API keys (display prefixes only), optionally of one agent", keyList)
	register("user list", "list operators", userList)
	register("user disable", "disable an operator by id or email: their tokens stop working at once", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return userSetDisabled(ctx, "disable", true, args, stdout, stderr)
	})
	register("user enable", "re-enable a disabled operator by id or email", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return userSetDisabled(ctx, "enable", false, args, stdout, stderr)
	})
}

// listFlags are the flags every list command shares.
type listFlags struct {
	json  *bool
	limit *int
}

func addListFlags(fs interface {
	Bool(string, bool, string) *bool
	Int(string, int, string) *int
}) listFlags {
	return listFlags{
		json:  fs.Bool("json", false, "print JSON Lines (one object per line, the REST API's fields) instead of a table"),
		limit: fs.Int("limit", 0, "print at most this many (default: all, read page by page)"),
	}
}

// listPageSize is the page the CLI reads lists in: memory stays bounded for any fleet size.
const listPageSize = 500

// walkPages reads a keyset-paginated list page by page and hands each item to emit, stopping after
// limit items (0: all).
func walkPages[T any](limit int, fetch func(store.Page) ([]T, bool, error), cursor func(T) (time.Time, string), emit func(T) error) error {
	p := store.Page{Limit: listPageSize}
	n := 0
	for {
		if limit > 0 {
			p.Limit = min(listPageSize, limit-n)
		}
		items, more, err := fetch(p)
		if err != nil {
			return err
		}
		for _, it := range items {
			if err := emit(it); err != nil {
				return err
			}
			n++
		}
		if !more || len(items) == 0 || (limit > 0 && n >= limit) {
			return nil
		}
		p.AfterTime, p.AfterID = cursor(items[len(items)-1])
	}
}

// table is a tab-aligned table on stdout, or nothing when --json is set.
func table(w io.Writer, jsonOut bool, header string) *tabwriter.Writer {
	if jsonOut {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

func flush(tw *tabwriter.Writer) error {
	if tw == nil {
		return nil
	}
	return tw.Flush()
}

func timeOr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

func agentList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent list", stderr)
	status := fs.String("status", "", "only agents with this status: active, disabled or decommissioned (default: all but decommissioned)")
	lf := addListFlags(fs)
	db := addDBFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch *status {
	case "", store.StatusActive, store.StatusDisabled, store.StatusDecommissioned:
	default:
		fmt.Fprintln(stderr, "--status must be active, disabled or decommissioned")
		return errUsage
	}
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	tw := table(stdout, *lf.json, "UUID\tNAME\tSTATUS\tTARGET VERSION\tREPORTED\tCREATED")
	err = walkPages(*lf.limit, func(p store.Page) ([]store.AgentInfo, bool, error) {
		return st.Agents.ListAgents(ctx, store.AgentPage{Limit: p.Limit, AfterTime: p.AfterTime, AfterUUID: p.AfterID, Status: *status})
	}, func(a store.AgentInfo) (time.Time, string) { return a.CreatedAt, a.UUID }, func(a store.AgentInfo) error {
		if tw == nil {
			return jsonLine(stdout, view.AgentOf(a, false))
		}
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", a.UUID, a.Name, a.Status, a.TargetVersion, timeOr(a.ReportedAt, "never"), a.CreatedAt.UTC().Format(time.RFC3339))
		return err
	})
	if err != nil {
		return err
	}
	return flush(tw)
}

func agentShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent show", stderr)
	jsonOut := fs.Bool("json", false, "print one line of JSON (the REST API's agent, with its keys) instead of text")
	db := addDBFlags(fs)
	pos, err := parseArgs(fs, args, 1, "[--json] AGENT_UUID")
	if err != nil {
		return err
	}
	if !uuid.Valid(pos[0]) {
		return notFound("no agent %q: an agent's id is a uuid (iotauth agent list)", pos[0])
	}
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	a, err := st.Agents.GetAgent(ctx, pos[0])
	if errors.Is(err, store.ErrNotFound) {
		return notFound("no agent %q: check the uuid (iotauth agent list)", pos[0])
	}
	if err != nil {
		return err
	}
	var keys []store.APIKey
	if err := walkPages(0, func(p store.Page) ([]store.APIKey, bool, error) { return st.Keys.ListAPIKeys(ctx, a.UUID, p) },
		func(k store.APIKey) (time.Time, string) { return k.CreatedAt, k.ID },
		func(k store.APIKey) error { keys = append(keys, k); return nil }); err != nil {
		return err
	}
	if *jsonOut {
		views := make([]any, 0, len(keys))
		for _, k := range keys {
			views = append(views, view.APIKeyOf(k))
		}
		return jsonLine(stdout, struct {
			Agent any   `json:"agent"`
			Keys  []any `json:"keys"`
		}{view.AgentOf(a, true), views})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "uuid:\t%s\nname:\t%s\nstatus:\t%s\nclient id:\tagent-%s\ntarget version:\t%d\ntarget state:\t%s\nreported state:\t%s\nreported at:\t%s\ncreated:\t%s\nupdated:\t%s\n",
		a.UUID, a.Name, a.Status, a.UUID, a.TargetVersion, a.TargetState, orNone(string(a.ReportedState)), timeOr(a.ReportedAt, "never"),
		a.CreatedAt.UTC().Format(time.RFC3339), a.UpdatedAt.UTC().Format(time.RFC3339))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\ndevice API keys:")
	kt := table(stdout, false, "  ID\tPREFIX\tNAME\tRIGHTS\tEXPIRES\tLAST USED\tSTATE")
	for _, k := range keys {
		fmt.Fprintf(kt, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Prefix, k.Name, strings.Join(k.Rights, ","), timeOr(k.ExpiresAt, "never"), timeOr(k.LastUsedAt, "never"), keyState(k.ExpiresAt, k.RevokedAt))
	}
	return kt.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// keyState is "active", "expired" or "revoked".
func keyState(expires, revoked *time.Time) string {
	switch {
	case revoked != nil:
		return "revoked"
	case expires != nil && !expires.After(time.Now()):
		return "expired"
	}
	return "active"
}

func keyList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("key list", stderr)
	agent := fs.String("agent", "", "only this agent's keys (its uuid)")
	lf := addListFlags(fs)
	db := addDBFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *agent != "" && !uuid.Valid(*agent) {
		fmt.Fprintln(stderr, "--agent must be an agent's uuid")
		return errUsage
	}
	return listKeys(ctx, db, lf, stdout, stderr, deviceKeys, keys.Filter{AgentUUID: *agent}, "ID\tAGENT\tPREFIX\tNAME\tRIGHTS\tEXPIRES\tLAST USED\tSTATE",
		func(k store.APIKey) (time.Time, string) { return k.CreatedAt, k.ID },
		func(k store.APIKey) any { return view.APIKeyOf(k) },
		func(k store.APIKey) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", k.ID, k.AgentUUID, k.Prefix, k.Name, strings.Join(k.Rights, ","),
				timeOr(k.ExpiresAt, "never"), timeOr(k.LastUsedAt, "never"), keyState(k.ExpiresAt, k.RevokedAt))
		})
}

func userList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("user list", stderr)
	lf := addListFlags(fs)
	db := addDBFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	tw := table(stdout, *lf.json, "ID\tEMAIL\tROLE\tSTATE\tCREATED")
	svc := users.New(st.Accounts, users.Config{})
	err = walkPages(*lf.limit, func(p store.Page) ([]store.User, bool, error) { return svc.List(ctx, p) },
		func(u store.User) (time.Time, string) { return u.CreatedAt, u.ID },
		func(u store.User) error {
			if tw == nil {
				return jsonLine(stdout, view.UserOf(u))
			}
			state := "active"
			if u.Disabled {
				state = "disabled"
			}
			_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Role, state, u.CreatedAt.UTC().Format(time.RFC3339))
			return err
		})
	if err != nil {
		return err
	}
	return flush(tw)
}

// userSetDisabled disables or re-enables an operator named by id or email. Disabling revokes the user's
// refresh tokens and makes their access tokens fail at once (store.UpdateUser); the last enabled admin
// cannot be disabled.
func userSetDisabled(ctx context.Context, verb string, disabled bool, args []string, stdout, stderr io.Writer) error {
	who, st, err := argAndStore(ctx, "user "+verb, "USER_ID|EMAIL", args, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	svc := users.New(st.Accounts, users.Config{})
	u, err := svc.Find(ctx, who)
	var se *service.Error
	switch {
	case errors.As(err, &se) && errors.Is(err, service.ErrNotFound) && se.Msg != "":
		return notFound("no user %q: %s", who, se.Msg)
	case errors.Is(err, service.ErrNotFound):
		return notFound("no user %q: give an id or email from 'iotauth user list'", who)
	case err != nil:
		return err
	}
	changed, err := svc.Update(ctx, cliService(), u.ID, users.Change{Disabled: &disabled})
	switch {
	case errors.Is(err, service.ErrConflict):
		return refused("%s is the last enabled admin: promote or enable another admin first", u.Email)
	case errors.Is(err, service.ErrNotFound):
		return notFound("no user %q", who)
	case err != nil:
		return err
	}
	fmt.Fprintf(stdout, "user %s (%s) is now %sd\n", changed.Email, changed.ID, verb)
	return nil
}
