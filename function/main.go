// Command cmkrotator keeps Azure Fluid Relay servers on the newest version
// of their customer-managed key. Under the Azure Functions host it is the
// custom handler (serve, the default); on a terminal it rotates, replays
// saved events, shows status, or runs the whole system locally against an
// emulation of Azure (local).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// Exit codes.
const (
	exitOK        = 0 // done; every server rotated, current or skipped
	exitFailed    = 1 // some work failed for good, or the command could not run
	exitUsage     = 2 // bad command line or settings; nothing was done
	exitRetryable = 3 // something failed that running again later could fix
)

const usage = `cmkrotator keeps Azure Fluid Relay servers on the newest version of
their customer-managed key.

Usage:
  cmkrotator [serve]                      custom handler for the Functions host
  cmkrotator rotate [flags] KEY_URL       rotate one key's servers now
  cmkrotator replay [flags] [FILE|-]      process saved events (a dead-letter blob)
  cmkrotator replay --dead-letter URL     replay every dead-letter blob under a container
  cmkrotator replay --republish ENDPOINT  send saved events to an Event Grid custom topic
  cmkrotator pull [flags]                 receive events from an Event Grid namespace
  cmkrotator reconcile [flags]            every server to its key's current version
  cmkrotator status [--json]              keys, servers, versions safe to disable (a table; JSON with --json)
  cmkrotator discover --scope SCOPE       the map with the servers found in SCOPE that use its keys added
  cmkrotator local [flags]                run everything against a local emulator
  cmkrotator help [COMMAND]               this overview, or a command's flags
  cmkrotator version                      the version and commit of this build

Run "cmkrotator help COMMAND" for a command's flags. Settings come from
the environment (see README.md, Settings). Commands log to stderr, as text
unless LOG_FORMAT=json; serve logs JSON to stdout (errors to stderr) unless
stderr is a terminal or LOG_FORMAT says otherwise.

Exit codes:
  0  done: every server rotated, current or skipped
  1  some work failed for good (reconcile: or drift was left; replay: or an
     event did not decode; status: something needs a person), or the
     command could not run
  2  bad command line or settings, or nothing to do (replay: no event
     decodes); nothing was done
  3  something failed that running again later could fix (status: and
     nothing needs a person; the only problems are unreachable servers,
     a refused credential, a retryable key error or an update in flight)
`

// env is what a command may use of the process.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], env{os.Getenv, os.Stdin, os.Stdout, os.Stderr}))
}

// run runs the command of args and returns the exit code. ctx ends on
// SIGTERM or interrupt.
func run(ctx context.Context, args []string, e env) int {
	cmd := "serve"
	switch {
	case len(args) > 0 && isHelpFlag(args[0]):
		cmd, args = "help", args[1:]
	case len(args) > 0 && isVersionFlag(args[0]):
		cmd, args = "version", args[1:]
	case len(args) > 0 && strings.HasPrefix(args[0], "-"):
		// serve, the default, takes no flags: a flag here is a mistake
		// on a terminal, never the host's.
		fmt.Fprintf(e.stderr, "cmkrotator: unknown flag %s\n\n%s", args[0], usage)
		return exitUsage
	case len(args) > 0:
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" {
		return helpCommand(ctx, args, e)
	}
	c, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(e.stderr, "cmkrotator: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	return exitCode(c(ctx, args, e), e.stderr)
}

// commands are the commands run dispatches to by name, help apart.
var commands = map[string]func(context.Context, []string, env) error{
	"serve":     serveCommand,
	"rotate":    rotateCommand,
	"replay":    replayCommand,
	"status":    statusCommand,
	"reconcile": reconcileCommand,
	"pull":      pullCommand,
	"local":     localCommand,
	"discover":  discoverCommand,
	"version":   versionCommand,
}

// helpCommand prints the overview, or with a command's name that
// command's usage and flags, to stdout.
func helpCommand(ctx context.Context, args []string, e env) int {
	switch {
	case len(args) == 0 || (len(args) == 1 && args[0] == "help"):
		fmt.Fprint(e.stdout, usage)
		return exitOK
	case len(args) > 1:
		fmt.Fprintf(e.stderr, "cmkrotator: help takes one command, got %s\n", quoted(args))
		return exitUsage
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "cmkrotator: help: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	return exitCode(c(ctx, []string{"--help"}, e), e.stderr)
}

func versionCommand(_ context.Context, args []string, e env) error {
	fs := newFlags("version", "usage: cmkrotator version\n\n"+
		"Prints the version of this build, with its commit and Go release when\n"+
		"the build recorded them. --version does the same.", e)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("version takes no arguments, got %s", quoted(pos))
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprintln(e.stdout, versionLine(bi))
	return nil
}

// versionLine is "cmkrotator VERSION (commit REV[, modified]; GO)", each
// part in parentheses only when bi records it; bi may be nil.
func versionLine(bi *debug.BuildInfo) string {
	if bi == nil {
		return "cmkrotator (unknown version: the binary records no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}

	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	var parts []string
	if rev != "" {
		if modified == "true" {
			rev += ", modified"
		}
		parts = append(parts, "commit "+rev)
	}
	if bi.GoVersion != "" {
		parts = append(parts, bi.GoVersion)
	}
	if len(parts) == 0 {
		return "cmkrotator " + v
	}
	return "cmkrotator " + v + " (" + strings.Join(parts, "; ") + ")"
}

// exitError carries an exit code and, unless quiet, a message for stderr.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// failed is err, from work a command could not finish, with exit code 3
// when a later run could succeed (rotation.ErrRetryable); nil for nil.
func failed(err error) error {
	if err != nil && errors.Is(err, rotation.ErrRetryable) {
		return &exitError{code: exitRetryable, err: err}
	}
	return err
}

// exitCode prints err in one line and maps it to an exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var se *settingsError
	var ee *exitError
	switch {
	case errors.As(err, &se):
		fmt.Fprintf(stderr, "cmkrotator: %v\n", err)
		return exitUsage
	case errors.As(err, &ee):
		if ee.err != errQuiet {
			fmt.Fprintf(stderr, "cmkrotator: %v\n", ee.err)
		}
		return ee.code
	default:
		fmt.Fprintf(stderr, "cmkrotator: %v\n", err)
		return exitFailed
	}
}

// errQuiet is an exit whose reason the command already printed.
var errQuiet = errors.New("see above")

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// newFlags returns a flag set whose --help prints use, the flags and
// the exit codes.
func newFlags(name, use string, e env) *flag.FlagSet {
	return newFlagsExits(name, use, "Exit codes: 0 done, 1 failed, 2 bad usage or settings, 3 retry later.", e)
}

// newFlagsExits is newFlags for a command that explains its exit codes
// in exits. Parse the flags with parseFlags, which prints help asked for
// to stdout and a bad flag, in one line, to stderr.
func newFlagsExits(name, use, exits string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	out := &flagOutput{e: e}
	out.usage = func(w io.Writer) {
		fmt.Fprintf(w, "%s\n", use)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(out)
		fmt.Fprintf(w, "\n%s\n", exits)
	}
	// Package flag prints its errors and calls Usage itself, both to
	// stderr; parseFlags does it instead, to where each belongs.
	fs.SetOutput(out)
	fs.Usage = func() {}
	return fs
}

// flagOutput is a flag set's output: it drops what package flag writes,
// and keeps, for parseFlags, the command's streams and its usage.
type flagOutput struct {
	e     env
	usage func(io.Writer)
}

func (*flagOutput) Write(p []byte) (int, error) { return len(p), nil }

func isHelpFlag(a string) bool {
	return a == "-h" || a == "--help" || a == "-help"
}

func isVersionFlag(a string) bool {
	return a == "--version" || a == "-version"
}

// quoted names positional arguments for a usage error: "none", or each
// one quoted.
func quoted(args []string) string {
	if len(args) == 0 {
		return "none"
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, ", ")
}

// parseFlags parses args, flags and positional arguments in any order,
// and returns the positional ones; after "--" every argument is
// positional. Asked for help (-h, --help), it prints the command's usage
// to stdout and returns flag.ErrHelp, an exit 0. A bad flag is named in
// one line on stderr, with where to read the flags, and maps to
// exitUsage.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	out, _ := fs.Output().(*flagOutput)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if out == nil {
				return nil, &exitError{code: exitUsage, err: err}
			}
			if errors.Is(err, flag.ErrHelp) {
				out.usage(out.e.stdout)
				return nil, err
			}
			fmt.Fprintf(out.e.stderr, "cmkrotator %s: %s\nRun \"cmkrotator %s --help\" for its flags.\n",
				fs.Name(), flagError(err, args), fs.Name())
			return nil, &exitError{code: exitUsage, err: errQuiet}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// Package flag's errors, which name a flag as -name.
var (
	flagUnknown  = regexp.MustCompile(`^flag provided but not defined: -(.+)$`)
	flagNoValue  = regexp.MustCompile(`^flag needs an argument: -(.+)$`)
	flagBadValue = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([^:]+): (.+)$`)
)

// flagError words a flag error of package flag in terms of what was
// typed: "unknown flag --bogus", "flag --port needs a value", "flag
// --port: invalid value "x": parse error".
func flagError(err error, args []string) string {
	msg := err.Error()
	if m := flagUnknown.FindStringSubmatch(msg); m != nil {
		return "unknown flag " + typed(m[1], args)
	}
	if m := flagNoValue.FindStringSubmatch(msg); m != nil {
		return "flag " + typed(m[1], args) + " needs a value"
	}
	if m := flagBadValue.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("flag %s: invalid value %s: %s", typed(m[2], args), m[1], m[3])
	}
	return msg
}

// typed is flag name as args spell it (-name or --name), without any
// =value; --name when args do not have it.
func typed(name string, args []string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		flagPart, _, _ := strings.Cut(a, "=")
		if flagPart == "-"+name || flagPart == "--"+name {
			return flagPart
		}
	}
	return "--" + name
}
