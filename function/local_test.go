package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// TestLocalOnce runs cmkrotator local --once as a person would and checks
// the report: every pinned server rotated and verified, the versionless
// one and the one on another key left alone, exit code 0.
func TestLocalOnce(t *testing.T) {
	// local points the managed identity credential at its emulator through
	// the process environment; restore it afterwards.
	t.Setenv("IDENTITY_ENDPOINT", "")
	t.Setenv("IDENTITY_HEADER", "")
	// Its work folder goes under TMPDIR and must be gone afterwards.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)

	for _, asJSON := range []bool{true, false} {
		args := []string{"local", "--once"}
		if asJSON {
			args = append(args, "--json")
		}
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			getenv := func(string) string { return "" }
			code := run(context.Background(), args, scannedEnv(t, getenv, &stdout, &stderr))
			if code != exitOK {
				t.Fatalf("got exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
			}
			for _, step := range []string{"vault seeded", "handler serving", "new key version created", "delivering event", "server rotated", "event delivered"} {
				if !strings.Contains(stderr.String(), step) {
					t.Errorf("got logs without %q, want every step logged:\n%s", step, stderr.String())
				}
			}
			if left, _ := filepath.Glob(filepath.Join(tmp, "cmkrotator-local-*")); len(left) > 0 {
				t.Errorf("got %v left behind, want the work folder removed", left)
			}
			if !asJSON {
				if !strings.Contains(stdout.String(), "Every subscribed server ended as expected") {
					t.Errorf("got\n%s\nwant the success line", stdout.String())
				}
				return
			}

			var res LocalResult
			if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
				t.Fatalf("decode %s: %v", stdout.String(), err)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(stdout.Bytes(), &fields); err != nil {
				t.Fatal(err)
			}
			if h, ok := fields["handler"]; ok {
				t.Errorf("got handler %s, want none: nothing serves there after --once", h)
			}
			if !res.OK || !res.Invocation.Succeeded || res.Invocation.EventGridStatus != 202 {
				t.Errorf("got ok %t invocation %+v, want success", res.OK, res.Invocation)
			}
			got := map[string]int{}
			for _, s := range res.Servers {
				if !s.Verified {
					t.Errorf("server %s: not verified: %s", s.ID, s.Detail)
				}
				got[s.Expected]++
				if s.Expected == string(rotation.Rotated) && !strings.HasSuffix(s.After, res.NewVersion) {
					t.Errorf("server %s: got %s, want version %s", s.ID, s.After, res.NewVersion)
				}
			}
			if got["rotated"] != 3 || got["skipped"] != 2 {
				t.Errorf("got %v, want 3 rotated and 2 skipped", got)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
	}{
		{[]string{"help"}, exitOK},
		{[]string{"rotate", "--help"}, exitOK},
		{[]string{"replay", "--help"}, exitOK},
		{[]string{"status", "--help"}, exitOK},
		{[]string{"local", "--help"}, exitOK},
		{[]string{"serve", "--help"}, exitOK},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"rotate"}, exitUsage},
		{[]string{"rotate", "--bogus"}, exitUsage},
		{[]string{"rotate", "https://kv.vault.azure.net/secrets/x"}, exitUsage},
		{[]string{"rotate", "https://kv.vault.azure.net/keys/x"}, exitUsage}, // no ROTATION_TARGETS
		{[]string{"serve"}, exitUsage},                                       // no port, no map
		{[]string{"replay", "/nonexistent/events.json"}, exitUsage},
		{[]string{"discover", "--help"}, exitOK},
		{[]string{"discover"}, exitUsage},                                                  // no scope
		{[]string{"discover", "--scope", "/subscriptions/s/providers/x"}, exitUsage},       // not a scope
		{[]string{"discover", "--scope", "/subscriptions/s", "extra"}, exitUsage},          // an argument
		{[]string{"discover", "--scope", "/subscriptions/s/resourceGroups/rg"}, exitUsage}, // no ROTATION_TARGETS
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, scannedEnv(t, func(string) string { return "" }, &stdout, &stderr))
			if code != tt.wantCode {
				t.Errorf("got exit %d, want %d\n%s%s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if tt.wantCode == exitUsage && stderr.Len() == 0 {
				t.Error("got nothing on stderr, want the reason")
			}
		})
	}
}

// TestHelp: --help and -h show the command overview; a command's --help
// shows its own usage. Help asked for is the output: stdout, exit 0.
func TestHelp(t *testing.T) {
	tests := []struct {
		args    []string
		want    string // in stdout
		notWant string
	}{
		{[]string{"help"}, "cmkrotator rotate [flags] KEY_URL", ""},
		{[]string{"--help"}, "cmkrotator rotate [flags] KEY_URL", ""},
		{[]string{"-h"}, "cmkrotator rotate [flags] KEY_URL", ""},
		{[]string{"serve", "--help"}, "usage: cmkrotator [serve]", "cmkrotator rotate [flags] KEY_URL"},
		{[]string{"status", "-h"}, "--json prints JSON instead", ""},
		{[]string{"pull", "--help"}, "nothing consumed", ""},
		{[]string{"discover", "--help"}, "Keys are never added", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, scannedEnv(t, func(string) string { return "" }, &stdout, &stderr))
			out := stdout.String()
			if code != exitOK || !strings.Contains(out, tt.want) || (tt.notWant != "" && strings.Contains(out, tt.notWant)) || stderr.Len() != 0 {
				t.Errorf("got exit %d\nstdout:\n%s\nstderr:\n%s\nwant 0, %q on stdout and nothing on stderr", code, stdout.String(), stderr.String(), tt.want)
			}
		})
	}
}

// TestLocalBusyPort: a --port already taken fails before the emulator
// is started or seeded.
func TestLocalBusyPort(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)

	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"local", "--once", "--port", port},
		scannedEnv(t, func(string) string { return "" }, &stdout, &stderr))
	if code != exitFailed || !strings.Contains(stderr.String(), "cmkrotator: local: --port "+port+": ") ||
		!strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("got exit %d\n%s%s\nwant 1 naming the busy port", code, stdout.String(), stderr.String())
	}
	for _, step := range []string{"emulator", "seeded"} {
		if strings.Contains(stderr.String(), step) {
			t.Errorf("got\n%s\nwant nothing started or seeded", stderr.String())
		}
	}
}

// TestLocalUsage: bad local arguments exit 2 before anything is seeded.
func TestLocalUsage(t *testing.T) {
	for _, args := range [][]string{
		{"local", "--port", "99999"},
		{"local", "--port", "-1"},
		{"local", "--once", "extra"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, scannedEnv(t, func(string) string { return "" }, &stdout, &stderr))
			if code != exitUsage || !strings.Contains(stderr.String(), "cmkrotator: local") || strings.Contains(stderr.String(), "seeded") {
				t.Errorf("got exit %d\n%s%s\nwant 2, the reason, and nothing seeded", code, stdout.String(), stderr.String())
			}
		})
	}
}

// TestParseFlags: flags and positional arguments mix in any order; after
// "--" everything is positional.
func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantPos []string
		wantDry bool
	}{
		{[]string{"--dry-run", "a"}, []string{"a"}, true},
		{[]string{"a", "--dry-run"}, []string{"a"}, true},
		{[]string{"a", "--out", "x", "b"}, []string{"a", "b"}, false},
		{[]string{"-", "--dry-run"}, []string{"-"}, true},
		{[]string{"a", "--", "--dry-run"}, []string{"a", "--dry-run"}, false},
		{nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := newFlags("test", "usage: test", env{stderr: &bytes.Buffer{}})
			dry := fs.Bool("dry-run", false, "")
			fs.String("out", "", "")
			pos, err := parseFlags(fs, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(pos, "|") != strings.Join(tt.wantPos, "|") || *dry != tt.wantDry {
				t.Errorf("got %q dry-run %t, want %q dry-run %t", pos, *dry, tt.wantPos, tt.wantDry)
			}
		})
	}
}
