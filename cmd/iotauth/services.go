package main

import (
	"errors"
	"fmt"

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
	return keys.New(st, keys.Config{KeyKind: kind})
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
