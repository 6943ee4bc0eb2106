package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/audit"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/view"
)

func init() {
	register("audit tail", "print the newest audit events, oldest of them first; --follow keeps printing new ones", auditTail)
}

// followLookback is how far below the newest id printed each --follow poll looks again: identity ids
// are taken at insert, so an event can commit after a newer one; it is still printed as long as fewer
// than this many newer events were written meanwhile (the ids printed are remembered, never repeated).
const followLookback = 1000

func auditTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit tail", stderr)
	follow := fs.Bool("follow", false, "keep printing new events until interrupted (polls; see -interval)")
	interval := fs.Duration("interval", time.Second, "with --follow, how often to ask the database for new events (100ms to 1m)")
	n := fs.Int("n", 20, "how many of the newest events to print first (0: none, only new ones with --follow)")
	action := fs.String("action", "", "only events of this action, e.g. agent_create, session_kick")
	agent := fs.String("agent", "", "only events whose target or actor is this agent (its uuid)")
	actor := fs.String("actor", "", "only events by this actor, e.g. cli:alice, user:<id>, mosquitto-iotauth")
	since := fs.String("since", "", "only events at or after this RFC 3339 time")
	until := fs.String("until", "", "only events before this RFC 3339 time")
	jsonOut := fs.Bool("json", false, "print JSON Lines (GET /api/v1/audit's fields) instead of text")
	db := addDBFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	filter, err := audit.Filter{Action: *action, Agent: *agent, Actor: *actor, Since: *since, Until: *until}.Page()
	var bad *service.Error
	if errors.As(err, &bad) {
		// The audit service's validation (the REST API's too), with the flag's name.
		fmt.Fprintf(stderr, "--%s: %s\n", bad.Field, bad.Msg)
		return errUsage
	} else if err != nil {
		return err
	}
	if *n < 0 || *n > 10000 {
		fmt.Fprintln(stderr, "-n must be 0 to 10000")
		return errUsage
	}
	if *interval < 100*time.Millisecond || *interval > time.Minute {
		fmt.Fprintln(stderr, "-interval must be 100ms to 1m")
		return errUsage
	}
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	trail := audit.New(st.AuditTrail)
	emit := auditPrinter(stdout, *jsonOut)

	// The newest event now, whatever the filters: the starting point of both the first print and --follow.
	var last int64
	newest, _, err := trail.List(ctx, store.AuditPage{Limit: 1})
	if err != nil {
		return err
	}
	if len(newest) > 0 {
		last = newest[0].ID
	}
	if *n > 0 && last > 0 {
		p := filter
		p.Limit, p.BeforeID = *n, last+1
		events, _, err := trail.List(ctx, p)
		if err != nil {
			return err
		}
		slices.Reverse(events)
		for _, e := range events {
			if err := emit(e); err != nil {
				return err
			}
		}
	}
	if !*follow {
		return nil
	}
	// Events up to last were there at the start (printed or not): --follow prints only later ones,
	// including any that commit late with an id at or below last.
	seen := map[int64]bool{}
	for after := max(last-followLookback, 0); after < last; {
		p := filter
		p.AfterID, p.Ascending, p.Limit = after, true, 2000
		events, _, err := trail.List(ctx, p)
		if err != nil {
			return err
		}
		for _, e := range events {
			if e.ID <= last {
				seen[e.ID] = true
			}
		}
		if len(events) < p.Limit {
			break
		}
		after = events[len(events)-1].ID
	}
	for {
		for {
			p := filter
			p.AfterID, p.Ascending, p.Limit = max(last-followLookback, 0), true, 2000
			events, more, err := trail.List(ctx, p)
			if ctx.Err() != nil {
				return nil // interrupted: a normal end of --follow
			}
			if err != nil {
				return err
			}
			for _, e := range events {
				if seen[e.ID] {
					continue
				}
				if err := emit(e); err != nil {
					return err
				}
				seen[e.ID] = true
				last = max(last, e.ID)
			}
			for id := range seen {
				if id <= last-followLookback {
					delete(seen, id)
				}
			}
			if !more || len(events) == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

// auditPrinter prints one event per line: JSON, or time, actor, action, target, outcome and detail.
func auditPrinter(w io.Writer, jsonOut bool) func(store.AuditRecord) error {
	if jsonOut {
		return func(e store.AuditRecord) error { return jsonLine(w, view.AuditOf(e)) }
	}
	return func(e store.AuditRecord) error {
		detail := ""
		if len(e.Detail) > 0 {
			keys := make([]string, 0, len(e.Detail))
			for k := range e.Detail {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			var b strings.Builder
			for i, k := range keys {
				if i > 0 {
					b.WriteByte(' ')
				}
				fmt.Fprintf(&b, "%s=%v", k, e.Detail[k])
			}
			detail = b.String()
		}
		_, err := fmt.Fprintf(w, "%s  #%-6d %-22s %-22s %-44s %-7s %s %s\n", e.At.UTC().Format(time.RFC3339), e.ID, e.Actor, e.Action,
			orDash(e.Target), e.Outcome, orDash(e.RemoteAddr), detail)
		return err
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
