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
)

// The CLI reaches the database through the services (backend/service/…), as the REST API does: they
// validate, audit and run the transaction; a command only reads its flags and prints.

// cliService is the actor of the CLI's changes: the OS user, with "via": "cli" in every audit event.
func cliService() service.Actor {
	return service.Actor{Name: cliActor(), Detail: map[string]any{"via": "cli"}}
}

// keyService is the key service on st for a key environment (live or test).
func keyService(st *store.Store, kind secret.Kind) (*keys.Service, error) {
	return keys.New(st.Keys, keys.Config{KeyKind: kind})
}

// flagError turns a service's refusal of a request field into the message about the flag that set it
// (flags maps the field to the flag); other errors pass unchanged.
func flagError(err error, flags map[string]string) error {
	var se *service.Error
	if !errors.As(err, &se) || !errors.Is(err, service.ErrInvalid) {
		return err
	}
	if f, ok := flags[se.Field]; ok {
		return fmt.Errorf("%s: %s", f, se.Msg)
	}
	return errors.New(se.Msg)
}

// checkKey checks a new key's request as the service will, before anything connects, with the flags'
// names in the message. pick chooses the kind of key; the kind's checks do not use the store.
func checkKey[K, R any](pick func(*keys.Service) keys.Kind[K, R], req R, flags map[string]string) error {
	svc, err := keys.New(nil, keys.Config{})
	if err != nil {
		return err
	}
	return flagError(pick(svc).Check(req), flags)
}

// createKey makes a key of the kind pick chooses for the key environment env and prints what show
// makes of it (the key is in this output only) as indented JSON.
func createKey[K, R any](ctx context.Context, db *dbFlags, env string, stdout, stderr io.Writer, pick func(*keys.Service) keys.Kind[K, R],
	req R, flags map[string]string, show func(keys.Created[K]) any) error {
	kind, err := secret.APIKeyKind(env)
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
	c, err := pick(svc).Create(ctx, cliService(), req)
	if err != nil {
		return flagError(err, flags)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(show(c))
}

// listKeys prints the keys of the kind pick chooses, newest first: a table with header and a row per
// key, or with --json the key's JSON form per line.
func listKeys[K, R any](ctx context.Context, db *dbFlags, lf listFlags, stdout, stderr io.Writer, pick func(*keys.Service) keys.Kind[K, R],
	f keys.Filter, header string, cursor func(K) (time.Time, string), form func(K) any, row func(K) string) error {
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := keyService(st, secret.APIKey)
	if err != nil {
		return err
	}
	tw := table(stdout, *lf.json, header)
	err = walkPages(*lf.limit, func(p store.Page) ([]K, bool, error) { return pick(svc).List(ctx, f, p) }, cursor, func(k K) error {
		if tw == nil {
			return jsonLine(stdout, form(k))
		}
		_, err := fmt.Fprintln(tw, row(k))
		return err
	})
	if err != nil {
		return err
	}
	return flush(tw)
}

// revokeKey revokes the key named by the command's one argument, of the kind pick chooses; missing
// says there is no such key, done what was revoked.
func revokeKey[K, R any](ctx context.Context, cmd string, args []string, stdout, stderr io.Writer, pick func(*keys.Service) keys.Kind[K, R],
	missing func(id string) error, done func(id string, k K) string) error {
	id, st, err := argAndStore(ctx, cmd, "KEY_ID", args, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	svc, err := keyService(st, secret.APIKey)
	if err != nil {
		return err
	}
	k, err := pick(svc).Revoke(ctx, cliService(), id)
	if errors.Is(err, service.ErrNotFound) {
		return missing(id)
	} else if err != nil {
		return err
	}
	fmt.Fprintln(stdout, done(id, k))
	return nil
}

// topicList is an application or publishable key's topics as ACCESS:PATTERN,….
func topicList(topics []store.AppTopic) string {
	ts := make([]string, 0, len(topics))
	for _, t := range topics {
		ts = append(ts, t.Access+":"+t.Pattern)
	}
	return strings.Join(ts, ",")
}
