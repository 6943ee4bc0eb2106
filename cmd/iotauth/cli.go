package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"

	"github.com/iotauth/iotauth/backend/store"
)

// Exit codes of every command (docs/cli.md lists them): scripts branch on them.
const (
	exitOK       = 0 // done (and -h/--help)
	exitFailure  = 1 // anything else went wrong: the database is unreachable, a write failed
	exitUsage    = 2 // a malformed command line: unknown command or flag, missing argument
	exitNotFound = 3 // the agent, key or user named does not exist
	exitRefused  = 4 // the change was refused by the current state: device limit, email taken, last admin, decommissioned agent
)

// errHelp is what a command returns when asked for its help (-h): usage printed, exit 0.
var errHelp = errors.New("help")

// exitError carries the exit code of an error that is not a plain failure.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// notFound is a failure that exits with exitNotFound.
func notFound(format string, args ...any) error {
	return &exitError{code: exitNotFound, err: fmt.Errorf(format, args...)}
}

// refused is a failure that exits with exitRefused.
func refused(format string, args ...any) error {
	return &exitError{code: exitRefused, err: fmt.Errorf(format, args...)}
}

// exitCodeOf maps a command's error to its exit code.
func exitCodeOf(err error) int {
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, store.ErrNotFound):
		return exitNotFound
	case errors.Is(err, store.ErrDeviceLimit), errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrLastAdmin), errors.Is(err, store.ErrDecommissioned):
		return exitRefused
	}
	return exitFailure
}

// groups lists the command groups ("agent", "key", …): the first word of every two-word command.
func groups() map[string][]string {
	g := map[string][]string{}
	for name := range commands {
		if group, _, ok := strings.Cut(name, " "); ok {
			g[group] = append(g[group], name)
		}
	}
	for _, names := range g {
		sort.Strings(names)
	}
	return g
}

// groupUsage prints the commands of one group.
func groupUsage(w io.Writer, group string) {
	fmt.Fprintf(w, "usage: iotauth %s <command> [flags]\n\ncommands:\n", group)
	for _, n := range groups()[group] {
		fmt.Fprintf(w, "  %-22s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'iotauth %s <command> -h' for a command's flags. Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 refused.\n", group)
}

func isHelpArg(s string) bool { return s == "-h" || s == "--help" || s == "-help" || s == "help" }

// parseArgs parses flags that may come before or after the positional arguments (`agent show UUID
// --json` as well as `agent show --json UUID`) and returns the positional ones; want is their number.
func parseArgs(fs *flag.FlagSet, args []string, want int, what string) ([]string, error) {
	if fs.Usage == nil {
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "usage: %s %s\n", fs.Name(), what)
			fs.PrintDefaults()
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if len(pos) != want {
		fs.Usage()
		return nil, errUsage
	}
	return pos, nil
}

// cliActor names the person behind a CLI change in the audit trail: "cli:<os user>". The CLI runs with
// the database's own credentials, so the operating-system account is the best name there is.
func cliActor() string {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		name = "uid" + strconv.Itoa(os.Getuid())
	}
	return "cli:" + name
}

// jsonLine writes v as one line of JSON: every --json output of the CLI is JSON Lines (one object per
// line; a list prints one line per item, a show one line), so that it streams into jq or a script.
func jsonLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
