package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// dbFlags are the flags of every command that reaches PostgreSQL: the URL itself, or a file holding it.
type dbFlags struct {
	url  string
	file string
}

// addDBFlags registers -database-url and -database-url-file on fs. Neither shows an environment value
// as its default: a URL may carry a password, and -h must not print it.
func addDBFlags(fs *flag.FlagSet) *dbFlags {
	d := &dbFlags{}
	fs.StringVar(&d.url, "database-url", "", "PostgreSQL URL (default $DATABASE_URL); a password given here shows in ps: prefer $DATABASE_URL or -database-url-file")
	fs.StringVar(&d.file, "database-url-file", "", "file holding the PostgreSQL URL, trailing newline ignored (default $DATABASE_URL_FILE)")
	return d
}

// errNoDatabase is what a command without a database says.
var errNoDatabase = errors.New("no database given: set DATABASE_URL (e.g. postgres://iotauth:secret@127.0.0.1:5432/iotauth) or DATABASE_URL_FILE (a file holding it), or pass -database-url-file")

// resolve returns the database URL: from the flags (-database-url or -database-url-file, one of them),
// else from the environment ($DATABASE_URL or $DATABASE_URL_FILE, one of them). A password in the
// -database-url value draws a warning on stderr (docs/security.md, O3): every user of the machine can read a
// process's arguments.
func (d *dbFlags) resolve(getenv func(string) string, stderr io.Writer) (string, error) {
	switch {
	case d.url != "" && d.file != "":
		return "", errors.New("both -database-url and -database-url-file are given: use one")
	case d.url != "":
		if hasPassword(d.url) {
			fmt.Fprintln(stderr, "iotauth: warning: the -database-url value carries a password, which every user of this machine can read in the process list (ps); "+
				"set DATABASE_URL instead, or put the URL in a file readable only by this user and pass -database-url-file FILE (or set DATABASE_URL_FILE)")
		}
		return d.url, nil
	case d.file != "":
		return readURLFile(d.file, "-database-url-file")
	}
	env, file := getenv("DATABASE_URL"), getenv("DATABASE_URL_FILE")
	switch {
	case env != "" && file != "":
		return "", errors.New("both DATABASE_URL and DATABASE_URL_FILE are set: unset one")
	case env != "":
		return env, nil
	case file != "":
		return readURLFile(file, "DATABASE_URL_FILE")
	}
	return "", errNoDatabase
}

// readURLFile reads a database URL from a file, without its trailing newline.
func readURLFile(path, origin string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the database URL from the file %s (named by %s): %w", path, origin, err)
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("the file %s (named by %s) is empty: put the PostgreSQL URL in it", path, origin)
	}
	return u, nil
}

// keyValuePassword finds a password in a key=value connection string.
var keyValuePassword = regexp.MustCompile(`(?:^|\s)password\s*=\s*\S`)

// hasPassword reports whether a connection string carries a password, in either the URL form
// (postgres://user:password@host/db or ?password=) or the key=value form (password=...).
func hasPassword(dsn string) bool {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return strings.Contains(strings.SplitN(strings.SplitN(dsn, "://", 2)[1], "@", 2)[0], ":")
		}
		if _, ok := u.User.Password(); ok {
			return true
		}
		return u.Query().Get("password") != ""
	}
	return keyValuePassword.MatchString(dsn)
}
