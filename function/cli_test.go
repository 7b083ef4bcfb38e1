package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmkrotator/cmkrotator/internal/logcheck"
)

// runIn runs args in process with the settings of vars and returns the
// exit code, stdout and stderr.
func runIn(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return vars[k] }
	code := run(t.Context(), args, scannedEnv(t, getenv, &stdout, &stderr))
	return code, stdout.String(), stderr.String()
}

// scannedEnv is what a command gets in process: getenv, no stdin, and
// stdout and stderr written to the given writers and scanned for
// credentials by logcheck when t ends, but for lines that begin with one
// of skip.
func scannedEnv(t *testing.T, getenv func(string) string, stdout, stderr io.Writer, skip ...string) env {
	t.Helper()
	return env{getenv, strings.NewReader(""), logcheck.Writer(t, stdout, skip...), logcheck.Writer(t, stderr, skip...)}
}

// localShown are the lines of cmkrotator local, while it keeps serving,
// that show a person the function key of this run and the identity
// header of its own emulator, for the curl lines and the shell to try:
// output to copy, not log lines. Only they are left out of the scan.
// (localserve_test.go keeps the same list for the built binary.)
var localShown = []string{`curl -s `, `export IDENTITY_ENDPOINT=`}

// TestHelpCommand: help COMMAND prints that command's usage on stdout;
// help with an unknown command is bad usage.
func TestHelpCommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "rotate"}, "usage: cmkrotator rotate [flags] KEY_URL"},
		{[]string{"help", "replay"}, "-dead-letter"},
		{[]string{"help", "serve"}, "usage: cmkrotator [serve]"},
		{[]string{"help", "version"}, "usage: cmkrotator version"},
		{[]string{"--help", "status"}, "usage: cmkrotator status"},
		{[]string{"help", "help"}, "cmkrotator rotate [flags] KEY_URL"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runIn(t, nil, tt.args...)
			if code != exitOK || !strings.Contains(out, tt.want) {
				t.Errorf("got exit %d\nstdout:\n%s\nstderr:\n%s\nwant 0 and %q on stdout", code, out, errOut, tt.want)
			}
			if tt.args[1] != "help" && strings.Contains(out, "cmkrotator keeps Azure Fluid Relay") {
				t.Errorf("got the overview\n%s\nwant only %s's usage", out, tt.args[1])
			}
		})
	}

	for _, args := range [][]string{{"help", "frobnicate"}, {"help", "rotate", "replay"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := runIn(t, nil, args...)
			if code != exitUsage || out != "" || !strings.Contains(errOut, args[len(args)-1]) {
				t.Errorf("got exit %d\nstdout:\n%s\nstderr:\n%s\nwant 2 and a line naming %q", code, out, errOut, args[len(args)-1])
			}
		})
	}
}

// TestCommandFlags: every command prints its help to stdout when asked
// (exit 0) and names a bad flag in one line on stderr, with where to read
// its flags (exit 2), as the top level does.
func TestCommandFlags(t *testing.T) {
	for name := range commands {
		t.Run(name, func(t *testing.T) {
			for _, help := range []string{"--help", "-h"} {
				code, out, errOut := runIn(t, nil, name, help)
				if code != exitOK || !strings.HasPrefix(out, "usage: cmkrotator ") || errOut != "" {
					t.Errorf("%s %s: got exit %d\nstdout:\n%s\nstderr:\n%s\nwant 0, the usage on stdout, nothing on stderr",
						name, help, code, out, errOut)
				}
			}
			for _, bogus := range []string{"--bogus", "-bogus", "--bogus=1"} {
				code, out, errOut := runIn(t, nil, name, bogus)
				want := fmt.Sprintf("cmkrotator %s: unknown flag %s\nRun \"cmkrotator %s --help\" for its flags.\n",
					name, strings.TrimSuffix(bogus, "=1"), name)
				if code != exitUsage || out != "" || errOut != want {
					t.Errorf("%s %s: got exit %d\nstdout:\n%s\nstderr:\n%s\nwant 2 and only\n%s", name, bogus, code, out, errOut, want)
				}
			}
		})
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"local", "--port", "x"}, `cmkrotator local: flag --port: invalid value "x": parse error`},
		{[]string{"local", "--port"}, "cmkrotator local: flag --port needs a value"},
		{[]string{"rotate", "-dry-run=maybe", "k"}, `cmkrotator rotate: flag -dry-run: invalid value "maybe": parse error`},
	} {
		code, out, errOut := runIn(t, nil, tt.args...)
		if first, _, _ := strings.Cut(errOut, "\n"); code != exitUsage || out != "" || first != tt.want {
			t.Errorf("%q: got exit %d, first line %q, want 2 and %q", tt.args, code, first, tt.want)
		}
	}
}

// TestUnknownTopLevelFlag: a flag before any command is named as unknown
// and answered with the overview, not serve's usage.
func TestUnknownTopLevelFlag(t *testing.T) {
	for _, flag := range []string{"--bogus", "-x", "--port=7071"} {
		t.Run(flag, func(t *testing.T) {
			code, out, errOut := runIn(t, nil, flag)
			first, _, _ := strings.Cut(errOut, "\n")
			if code != exitUsage || out != "" || first != "cmkrotator: unknown flag "+flag {
				t.Errorf("got exit %d, first line %q, want 2 and %q", code, first, "cmkrotator: unknown flag "+flag)
			}
			if !strings.Contains(errOut, "cmkrotator rotate [flags] KEY_URL") || strings.Contains(errOut, "usage: cmkrotator [serve]") {
				t.Errorf("got\n%s\nwant the overview, not serve's usage", errOut)
			}
		})
	}
}

// TestVersion: version and --version print one line naming the build.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := runIn(t, nil, args...)
			if code != exitOK || !strings.HasPrefix(out, "cmkrotator ") || strings.Count(out, "\n") != 1 {
				t.Errorf("got exit %d\nstdout: %q\nstderr:\n%s\nwant 0 and one line", code, out, errOut)
			}
		})
	}
	if code, _, errOut := runIn(t, nil, "version", "extra"); code != exitUsage || !strings.Contains(errOut, `"extra"`) {
		t.Errorf("version extra: got exit %d\n%s\nwant 2 naming the argument", code, errOut)
	}
}

func TestVersionLine(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, tt := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "cmkrotator (unknown version: the binary records no build information)"},
		{"release", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"},
			Settings: settings("vcs.revision", "a6dc5d7", "vcs.modified", "false")},
			"cmkrotator v1.4.0 (commit a6dc5d7; go1.26.8)"},
		{"dirty tree", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: settings("vcs.revision", "a6dc5d7", "vcs.modified", "true")},
			"cmkrotator (devel) (commit a6dc5d7, modified; go1.26.8)"},
		{"no vcs", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"cmkrotator (devel) (go1.26.8)"},
		{"nothing recorded", &debug.BuildInfo{}, "cmkrotator (devel)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := versionLine(tt.bi); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestStrayArguments: a usage error for extra arguments names them.
func TestStrayArguments(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "keys"}, `status takes no arguments, got "keys"`},
		{[]string{"serve", "now"}, `serve takes no arguments, got "now"`},
		{[]string{"reconcile", "a", "b"}, `reconcile takes no arguments, got "a", "b"`},
		{[]string{"rotate"}, "rotate takes one key URL, got none"},
		{[]string{"replay", "a.json", "b.json"}, `replay takes at most one file, got "a.json", "b.json"`},
		{[]string{"replay", "--dead-letter", "https://acct.blob.core.windows.net/c", "a.json"},
			`replay --dead-letter takes no file, got "a.json"`},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := runIn(t, nil, tt.args...)
			if code != exitUsage || !strings.Contains(errOut, tt.want) {
				t.Errorf("got exit %d\n%s\nwant 2 and %q", code, errOut, tt.want)
			}
		})
	}
}

// validTargets is a subscription map that loads, so that a command gets
// past its settings.
var validTargets = map[string]string{"ROTATION_TARGETS": `{"targets":[{"key":"https://kv.vault.azure.net/keys/cmk",` +
	`"servers":["/subscriptions/s/resourceGroups/rg/providers/Microsoft.FluidRelay/fluidRelayServers/relay-1"]}]}`}

// TestReplayWantsHTTPS: plain-http locations are refused before
// anything is read or sent, unless a connection string opens the
// dead-letter container (Azurite).
func TestReplayWantsHTTPS(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"replay", "--dead-letter", "http://acct.blob.core.windows.net/c"},
			`--dead-letter: want an https container URL, got "http://acct.blob.core.windows.net/c"`},
		{[]string{"replay", "--dead-letter", "http://acct.blob.core.windows.net/c?sv=1&sig=secret"},
			`got "http://acct.blob.core.windows.net/c"`},
		{[]string{"replay", "--dead-letter", "deadletters/SUB"}, "--dead-letter: want an https container URL"},
		{[]string{"replay", "--dead-letter", "https://acct.blob.core.windows.net/c", "--republish", "http://topic.example/api"},
			`--republish: want an https topic endpoint, got "http://topic.example/api"`},
		{[]string{"replay", "--republish", "http://topic.example/api", "-"}, "--republish: want an https topic endpoint"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runIn(t, validTargets, tt.args...)
			if code != exitUsage || out != "" || !strings.Contains(errOut, tt.want) {
				t.Errorf("got exit %d\nstdout:\n%s\nstderr:\n%s\nwant 2 and %q", code, out, errOut, tt.want)
			}
			if strings.Contains(errOut, "secret") {
				t.Errorf("got %s, want the SAS signature left out", errOut)
			}
		})
	}

	const azurite = "http://127.0.0.1:10000/devstoreaccount1/deadletters"
	for _, tt := range []struct {
		name string
		ro   recoverFlags
		vars map[string]string
	}{
		{"--connection-string", recoverFlags{deadLetter: azurite, connString: "UseDevelopmentStorage=true"}, nil},
		{"AZURE_STORAGE_CONNECTION_STRING", recoverFlags{deadLetter: azurite},
			map[string]string{"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}},
		{"container name", recoverFlags{deadLetter: "deadletters/SUB", connString: "UseDevelopmentStorage=true"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := env{getenv: func(k string) string { return tt.vars[k] }}
			if err := tt.ro.check(e); err != nil {
				t.Errorf("got %v, want %s accepted with a connection string", err, tt.ro.deadLetter)
			}
		})
	}
}

// TestReplayFileErrors: a directory is bad usage, and a file that does
// not decode says "decode events" once.
func TestReplayFileErrors(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runIn(t, validTargets, "replay", dir)
	if code != exitUsage || out != "" || !strings.Contains(errOut, dir+" is a directory") {
		t.Errorf("replay DIR: got exit %d\n%s%s\nwant 2 and a line saying %s is a directory", code, out, errOut, dir)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{bad"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runIn(t, validTargets, "replay", bad)
	if code != exitUsage || !strings.Contains(errOut, "decode events from "+bad+": ") || strings.Count(errOut, "decode events") != 1 {
		t.Errorf("replay bad.json: got exit %d\n%s\nwant 2 and %q once", code, errOut, "decode events")
	}
}

// watchWriter is a stderr safe for the goroutines that log to it; it
// calls seen once a write contains line.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	line string
	seen func()
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen != nil && bytes.Contains(p, []byte(w.line)) {
		w.seen()
		w.seen = nil
	}
	return w.buf.Write(p)
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestLocalJSONServing: local --json that keeps serving prints one JSON
// document on stdout; the lines to try go to stderr.
func TestLocalJSONServing(t *testing.T) {
	t.Setenv("IDENTITY_ENDPOINT", "")
	t.Setenv("IDENTITY_HEADER", "")
	t.Setenv("TMPDIR", t.TempDir())

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	stderr := &watchWriter{line: "serving until interrupted", seen: cancel}
	getenv := func(string) string { return "" }
	code := run(ctx, []string{"local", "--json"}, scannedEnv(t, getenv, &stdout, stderr, localShown...))
	if ctx.Err() == nil {
		t.Fatalf("local returned exit %d before serving\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}

	dec := json.NewDecoder(&stdout)
	var res LocalResult
	if err := dec.Decode(&res); err != nil || !res.OK {
		t.Fatalf("got %v, ok %t decoding stdout, want the report", err, res.OK)
	}
	if rest, _ := io.ReadAll(dec.Buffered()); strings.TrimSpace(string(rest)+stdout.String()) != "" {
		t.Errorf("got %q after the JSON report on stdout, want nothing", string(rest)+stdout.String())
	}
	if !regexp.MustCompile(`curl -s -H "x-functions-key: [^"]+" ` + regexp.QuoteMeta(res.Handler) + `/api/status`).MatchString(stderr.String()) {
		t.Errorf("got stderr\n%s\nwant the curl lines", stderr.String())
	}
}
