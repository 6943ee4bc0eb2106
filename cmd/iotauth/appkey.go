package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/iotauth/iotauth/backend/core/secret"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/keys"
	"github.com/iotauth/iotauth/backend/store"
	"github.com/iotauth/iotauth/backend/view"
)

func init() {
	register("app-key create", "create an application key with REST rights and MQTT topics (key and MQTT password printed once, as JSON)", appKeyCreate)
	register("app-key list", "list application keys (display prefixes only)", appKeyList)
	register("app-key revoke", "revoke an application key by id: its REST calls fail and its MQTT sessions close", appKeyRevoke)
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// parseTopic reads ACCESS:PATTERN, e.g. read:agents/+/telemetry.
func parseTopic(s string) (store.AppTopic, error) {
	access, pattern, ok := strings.Cut(s, ":")
	if !ok {
		return store.AppTopic{}, fmt.Errorf("--topic %q: write ACCESS:PATTERN, e.g. read:agents/+/telemetry (access: read, write or readwrite)", s)
	}
	return store.AppTopic{Access: access, Pattern: pattern}, nil
}

func appKeyCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("app-key create", stderr)
	name := fs.String("name", "", "key name (required)")
	var rights, topics repeated
	fs.Var(&rights, "right", "a REST right, repeatable: "+strings.Join(store.AppRights(), ", "))
	fs.Var(&topics, "topic", "an MQTT topic grant ACCESS:PATTERN, repeatable, e.g. read:agents/+/telemetry")
	expiresAt := fs.String("expires-at", "", "expiry, RFC 3339 (default: never expires)")
	env := fs.String("key-env", "live", "key environment: live or test (as the deployment's device keys)")
	db := addDBFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: iotauth app-key create --name NAME [--right R]... [--topic ACCESS:PATTERN]... [--expires-at TIME]")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	req := keys.AppKeyRequest{Name: *name, Rights: []string(rights)}
	var err error
	if req.Topics, req.ExpiresAt, err = topicsAndExpiry(topics, *expiresAt); err != nil {
		return err
	}
	appKeyFlags := map[string]string{"name": "--name", "rights": "--right", "topics": "--topic", "expiresAt": "--expires-at"}
	if err := keys.CheckAppKey(req, time.Now()); err != nil {
		return flagError(err, appKeyFlags)
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
	svc, err := keyService(st, kind)
	if err != nil {
		return err
	}
	c, err := svc.App.Create(ctx, cliService(), req)
	if err != nil {
		return flagError(err, appKeyFlags)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(view.CreatedAppKeyOf(c.Key, c.Secret, c.MQTTPassword))
}

func appKeyList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("app-key list", stderr)
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
	svc, err := keyService(st, secret.APIKey)
	if err != nil {
		return err
	}
	tw := table(stdout, *lf.json, "ID\tPREFIX\tNAME\tRIGHTS\tTOPICS\tEXPIRES\tSTATE")
	err = walkPages(*lf.limit, func(p store.Page) ([]store.AppKey, bool, error) {
		return svc.App.List(ctx, keys.Filter{}, p)
	}, func(k store.AppKey) (time.Time, string) { return k.CreatedAt, k.ID }, func(k store.AppKey) error {
		if tw == nil {
			return jsonLine(stdout, view.AppKeyOf(k))
		}
		var ts []string
		for _, t := range k.Topics {
			ts = append(ts, t.Access+":"+t.Pattern)
		}
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Prefix, k.Name, strings.Join(k.Rights, ","), strings.Join(ts, ","),
			timeOr(k.ExpiresAt, "never"), keyState(k.ExpiresAt, k.RevokedAt))
		return err
	})
	if err != nil {
		return err
	}
	return flush(tw)
}

func appKeyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	id, st, err := argAndStore(ctx, "app-key revoke", "KEY_ID", args, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := keyService(st, secret.APIKey)
	if err != nil {
		return err
	}
	if _, err := svc.App.Revoke(ctx, cliService(), id); errors.Is(err, service.ErrNotFound) {
		return notFound("no application key %q: find its id with 'iotauth app-key list'", id)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "application key %s revoked\n", id)
	return nil
}

// topicsAndExpiry parses the --topic and --expires-at flags that application and publishable keys share.
func topicsAndExpiry(specs []string, expiresAt string) ([]store.AppTopic, *time.Time, error) {
	var topics []store.AppTopic
	for _, s := range specs {
		t, err := parseTopic(s)
		if err != nil {
			return nil, nil, err
		}
		topics = append(topics, t)
	}
	if expiresAt == "" {
		return topics, nil, nil
	}
	t, err := time.Parse(time.RFC3339, expiresAt)
	if err != nil {
		return nil, nil, fmt.Errorf("--expires-at %q: write an RFC 3339 time such as 2030-01-02T15:04:05Z", expiresAt)
	}
	return topics, &t, nil
}
