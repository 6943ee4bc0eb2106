// Command iotauth is the companion binary of mosquitto-iotauth: the REST API (`serve`) and the admin
// CLI. This file only wires commands; each lives in its own file.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one CLI verb.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands maps "verb" or "noun verb" to its implementation; files register theirs in init.
var commands = map[string]command{}

func register(name, summary string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	commands[name] = command{summary: summary, run: run}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: iotauth <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-22s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'iotauth <group> -h' for a group's commands and 'iotauth <command> -h' for a command's flags.")
	fmt.Fprintln(w, "DATABASE_URL (or DATABASE_URL_FILE) names the database. Lists and shows take --json (JSON Lines).")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 refused (device limit, conflict, last admin).")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	name, rest := args[0], args[1:]
	if _, ok := commands[name]; !ok && len(args) > 1 {
		name, rest = args[0]+" "+args[1], args[2:]
	}
	cmd, ok := commands[name]
	if _, group := groups()[args[0]]; !ok && group {
		// `iotauth agent`, `iotauth agent -h`, `iotauth agent nosuch`: the group's commands.
		switch {
		case len(args) > 1 && isHelpArg(args[1]):
			groupUsage(stdout, args[0])
			return exitOK
		case len(args) > 1:
			fmt.Fprintf(stderr, "iotauth: unknown command %q\n\n", name)
		}
		groupUsage(stderr, args[0])
		return exitUsage
	}
	if !ok {
		fmt.Fprintf(stderr, "iotauth: unknown command %q\n\n", strings.Join(args[:min(2, len(args))], " "))
		usage(stderr)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, rest, stdout, stderr)
	code := exitCodeOf(err)
	if code != exitOK && code != exitUsage {
		fmt.Fprintf(stderr, "iotauth %s: %v\n", name, err)
	}
	return code
}
