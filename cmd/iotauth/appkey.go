package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

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
	flags := map[string]string{"name": "--name", "rights": "--right", "topics": "--topic", "expiresAt": "--expires-at"}
	if err := checkKey(appKeys, req, flags); err != nil {
		return err
	}
	return createKey(ctx, db, *env, stdout, stderr, appKeys, req, flags, func(c keys.Created[store.AppKey]) any {
		return view.CreatedAppKeyOf(c.Key, c.Secret, c.MQTTPassword)
	})
}

func appKeys(s *keys.Service) keys.Kind[store.AppKey, keys.AppKeyRequest] { return s.App }

func appKeyList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("app-key list", stderr)
	lf := addListFlags(fs)
	db := addDBFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return listKeys(ctx, db, lf, stdout, stderr, appKeys, keys.Filter{}, "ID\tPREFIX\tNAME\tRIGHTS\tTOPICS\tEXPIRES\tSTATE",
		func(k store.AppKey) (time.Time, string) { return k.CreatedAt, k.ID },
		func(k store.AppKey) any { return view.AppKeyOf(k) },
		func(k store.AppKey) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", k.ID, k.Prefix, k.Name, strings.Join(k.Rights, ","), topicList(k.Topics),
				timeOr(k.ExpiresAt, "never"), keyState(k.ExpiresAt, k.RevokedAt))
		})
}

func appKeyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return revokeKey(ctx, "app-key revoke", args, stdout, stderr, appKeys,
		func(id string) error {
			return notFound("no application key %q: find its id with 'iotauth app-key list'", id)
		},
		func(id string, _ store.AppKey) string { return fmt.Sprintf("application key %s revoked", id) })
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
