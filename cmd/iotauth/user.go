package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/iotauth/iotauth/backend/email"
	"github.com/iotauth/iotauth/backend/service"
	"github.com/iotauth/iotauth/backend/service/users"
)

func init() {
	register("user create", "create an operator (admin, operator or viewer); password from $IOTAUTH_PASSWORD or stdin", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return userCreate(ctx, args, os.Getenv, os.Stdin, stdout, stderr)
	})
}

// userCreate makes an operator account. There is no default account (docs/security.md, L6): the first admin is
// made here. The password never comes from a flag, which would show in ps and shell history.
func userCreate(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("user create", stderr)
	emailFlag := fs.String("email", "", "the operator's email (required)")
	role := fs.String("role", "", "admin, operator or viewer (required)")
	db := addDBFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: iotauth user create --email E --role admin|operator|viewer [--database-url-file FILE]")
		fmt.Fprintln(stderr, "The password is read from $IOTAUTH_PASSWORD, or else from the first line of standard input.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	addr, err := email.Normalize(*emailFlag)
	if err != nil {
		fmt.Fprintf(stderr, "--email is required and must look like name@example.com: %v\n", err)
		fs.Usage()
		return errUsage
	}
	if !users.ValidRole(*role) {
		fmt.Fprintln(stderr, "--role must be admin, operator or viewer")
		fs.Usage()
		return errUsage
	}
	pw := getenv("IOTAUTH_PASSWORD")
	if pw == "" {
		if f, ok := stdin.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprint(stderr, "Password (typing is visible; prefer IOTAUTH_PASSWORD or a pipe): ")
			}
		}
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read the password from standard input: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if pw == "" {
		return errors.New("no password: set IOTAUTH_PASSWORD or pipe it on standard input")
	}
	if err := users.CheckPassword(pw); err != nil {
		return flagError(err, nil)
	}
	st, err := storeFor(ctx, db, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := users.New(st.Accounts, users.Config{}).Create(ctx, cliService(), users.NewUser{Email: addr, Password: pw, Role: *role})
	if errors.Is(err, service.ErrConflict) {
		return refused("a user with email %s exists already", addr)
	}
	if err != nil {
		return flagError(err, nil)
	}
	return json.NewEncoder(stdout).Encode(map[string]string{"id": u.ID, "email": u.Email, "role": u.Role})
}
