package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/internal/fakehost"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// binary is cmkrotator, built once by TestMain into a folder removed
// after the tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cmkrotator-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "cmkrotator")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(t *testing.T) string {
	t.Helper()
	return binary
}

// appRoot is the repository root, the function app: host.json and the
// function folders.
func appRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// world is the emulator seeded with vault kv, key cmk at v1 and v2 (v2
// current), servers relay-1…3 on v1 and relay-follow versionless.
type world struct {
	emu    *emulator.Emulator
	vault  *emulator.Vault
	v1, v2 emulator.KeyVersionInfo
	key    string
	ids    []string
}

func seed(t *testing.T) *world {
	t.Helper()
	emu := testenv.Start(t)
	w := &world{emu: emu, vault: emu.AddVault("kv")}
	var err error
	if w.v1, err = w.vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if w.v2, err = w.vault.RotateKey("cmk"); err != nil {
		t.Fatal(err)
	}
	w.key = w.vault.URL() + "/keys/cmk"
	w.ids = testenv.Servers(t, emu, 3, w.v1.KID)
	follow, err := emu.PutServer(emulator.ServerSpec{Name: "relay-follow", KeyURL: w.key})
	if err != nil {
		t.Fatal(err)
	}
	w.ids = append(w.ids, follow)
	return w
}

// env is exactly what the host would pass: app settings, nothing of this
// process's environment.
func (w *world) env(t *testing.T, clientID string) []string {
	t.Helper()
	targets, err := json.Marshal(map[string]any{"targets": []any{map[string]any{"key": w.key, "servers": w.ids}}})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"IDENTITY_ENDPOINT=" + w.emu.IdentityEndpoint(),
		"IDENTITY_HEADER=" + w.emu.IdentityHeader(),
		"SSL_CERT_FILE=" + w.emu.CertFile(),
		"ROTATION_ARM_ENDPOINT=" + w.emu.ARMEndpoint(),
		"ROTATION_ARM_AUDIENCE=https://management.core.windows.net/",
		"ROTATION_TARGETS=" + string(targets),
		"ROTATION_RECONCILE_SCHEDULE=0 0 */6 * * *",
	}
	if clientID != "" {
		env = append(env, "AZURE_CLIENT_ID="+clientID)
	}
	return env
}

// start starts the built binary as the host starts the app in the
// repository root, with host.json's arguments. It stops when t ends, and
// its output is scanned by logcheck then.
func start(t *testing.T, env []string) *fakehost.Host {
	t.Helper()
	h, err := fakehost.Start(context.Background(), appRoot(t), env,
		fakehost.Options{Executable: build(t), FunctionKey: "fn-key", Output: logcheck.Writer(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("handler output:\n%s", h.Output())
		}
	})
	return h
}

// getStatus answers GET /api/status, which must succeed.
func getStatus(t *testing.T, h *fakehost.Host) handler.StatusResponse {
	t.Helper()
	status, _, body := forward(t, h, http.MethodGet, "/api/status", "")
	if status != http.StatusOK {
		t.Fatalf("got %d %s, want 200", status, body)
	}
	var st handler.StatusResponse
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func forward(t *testing.T, h *fakehost.Host, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, "https://cmk.azurewebsites.net"+path, rd)
	req.Header.Set("x-functions-key", "fn-key")
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}

// TestEndToEnd runs the built binary as the Functions host would, with
// only app settings, and drives all five functions against the emulator.
func TestEndToEnd(t *testing.T) {
	w := seed(t)
	h := start(t, w.env(t, w.emu.ClientID()))
	ctx := context.Background()

	t.Run("KeyNewVersionCreated", func(t *testing.T) {
		nv, err := w.vault.RotateKey("cmk")
		if err != nil {
			t.Fatal(err)
		}
		ev, _ := json.Marshal(w.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv"))
		res, err := h.EventGrid(ctx, "KeyNewVersionCreated", ev, fakehost.EventOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Succeeded || res.EventGridStatus() != http.StatusAccepted {
			t.Fatalf("got %d %s, want success and 202 to Event Grid", res.Status, res.Failure)
		}
		for _, id := range w.ids[:3] {
			if got, _ := w.emu.ServerKeyURL(id); got != nv.KID {
				t.Errorf("server %s: got %s, want %s", id, got, nv.KID)
			}
		}
		w.v2 = nv
	})

	t.Run("Status", func(t *testing.T) {
		st := getStatus(t, h)
		if st.Credential == nil || !st.Credential.OK {
			t.Errorf("got credential %+v, want ok", st.Credential)
		}
		if len(st.Keys) != 1 || len(st.Keys[0].Servers) != 4 {
			t.Fatalf("got %+v, want one key with four servers", st.Keys)
		}
		for _, s := range st.Keys[0].Servers[:3] {
			if s.State != rotation.StateCurrent {
				t.Errorf("server %s: got %s, want current", s.ID, s.State)
			}
		}
		if got := st.Keys[0].SafeToDisable; len(got) != 2 {
			t.Errorf("got safe to disable %v, want the two older versions", got)
		}
	})

	t.Run("Rotate", func(t *testing.T) {
		status, _, body := forward(t, h, http.MethodPost, "/api/rotate", `{"key":"`+w.v1.KID+`","dryRun":true,"allowOlder":true}`)
		if status != http.StatusOK {
			t.Fatalf("got %d %s, want 200", status, body)
		}
		var rep rotation.Report
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatal(err)
		}
		if !rep.DryRun || rep.TargetVersion != w.v1.Version {
			t.Errorf("got %+v, want a dry run to %s", rep, w.v1.Version)
		}
		if got, _ := w.emu.ServerKeyURL(w.ids[0]); got != w.v2.KID {
			t.Errorf("dry run moved a server to %s", got)
		}
		status, hdr, body := forward(t, h, http.MethodPost, "/api/rotate", `{"key":"https://other.vault.azure.net/keys/x"}`)
		if status != http.StatusNotFound || hdr.Get("Content-Type") != "application/problem+json" {
			t.Errorf("unknown key: got %d %s %s, want 404 problem", status, hdr.Get("Content-Type"), body)
		}
	})

	t.Run("Replay", func(t *testing.T) {
		blob, _ := json.Marshal([]any{
			w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.v2, "kv"),
			w.emu.KeyEvent(emulator.KeyNearExpiry, w.v2, "kv"),
		})
		status, _, body := forward(t, h, http.MethodPost, "/api/replay", string(blob))
		if status != http.StatusOK {
			t.Fatalf("got %d %s, want 200", status, body)
		}
		var got handler.ReplayResponse
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Results) != 2 || got.Results[0].Report == nil || got.Results[1].Ignored == "" {
			t.Errorf("got %s, want a report for the first event and the second ignored", body)
		}
	})

	t.Run("Reconcile", func(t *testing.T) {
		if err := w.emu.SetServerKeyURL(w.ids[1], w.v1.KID); err != nil {
			t.Fatal(err)
		}
		res, err := h.Timer(ctx, "Reconcile", fakehost.TimerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Succeeded {
			t.Fatalf("got %s, want success", res.Failure)
		}
		if got, _ := w.emu.ServerKeyURL(w.ids[1]); got != w.v2.KID {
			t.Errorf("got %s, want %s", got, w.v2.KID)
		}
	})

	t.Run("limits", func(t *testing.T) {
		status, _, _ := forward(t, h, http.MethodPost, "/api/replay", strings.Repeat(" ", 12<<20))
		if status != http.StatusRequestEntityTooLarge {
			t.Errorf("got %d, want 413", status)
		}
		if status, _, body := forward(t, h, http.MethodGet, "/api/status", ""); status != http.StatusOK {
			t.Errorf("after 413: got %d %s, want 200", status, body)
		}
		req := httptest.NewRequest(http.MethodGet, "https://cmk.azurewebsites.net/api/status", nil)
		resp, err := h.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("without the function key: got %d, want 401 from the host", resp.StatusCode)
		}
	})

	t.Run("logs", func(t *testing.T) {
		var withID int
		paths := map[string]bool{}
		for _, l := range h.Lines() {
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Errorf("got a line that is not JSON: %q", l)
				continue
			}
			if _, ok := rec["invocation_id"]; ok {
				withID++
			}
			if p, ok := rec["path"].(string); ok && rec["msg"] == "request done" {
				paths[p] = true
			}
			if strings.Contains(l, "access_token") || strings.Contains(l, "eyJ") {
				t.Errorf("got a line with a token: %q", l)
			}
		}
		if withID == 0 {
			t.Error("got no line with an invocation id, want several")
		}
		// host.json forwards HTTP: the API is served at its public paths.
		for _, p := range []string{"/KeyNewVersionCreated", "/Reconcile", "/api/status", "/api/rotate", "/api/replay"} {
			if !paths[p] {
				t.Errorf("got requests to %v, want one to %s", paths, p)
			}
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		if err := h.Close(); err != nil {
			t.Errorf("got exit %v, want a clean exit", err)
		}
	})
}

// TestRefusedIdentity starts the binary without AZURE_CLIENT_ID, so the
// token endpoint refuses it: the refusal is named once, plainly, and
// status shows it.
func TestRefusedIdentity(t *testing.T) {
	w := seed(t)
	h := start(t, w.env(t, ""))

	st := getStatus(t, h)
	if st.Credential == nil || st.Credential.OK || !strings.Contains(st.Credential.Error, "system-assigned") ||
		!strings.Contains(st.Credential.Error, "set AZURE_CLIENT_ID") {
		t.Errorf("got credential %+v, want a refusal naming the identity and what to set", st.Credential)
	}

	ev, _ := json.Marshal(w.emu.KeyEvent(emulator.KeyNewVersionCreated, w.v2, "kv"))
	if _, err := h.EventGrid(context.Background(), "KeyNewVersionCreated", ev, fakehost.EventOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("got exit %v, want a clean exit", err)
	}
	if got := strings.Count(h.Output(), "credential refused"); got != 1 {
		t.Errorf("got %d lines naming the refused credential, want 1:\n%s", got, h.Output())
	}
}

// TestBadSettings starts the binary with a broken map: one line on stderr,
// exit code 2, before serving anything.
func TestBadSettings(t *testing.T) {
	bin := build(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"FUNCTIONS_CUSTOMHANDLER_PORT=1", `ROTATION_TARGETS={"targets":[{"key":"https://kv.vault.azure.net/secrets/x","servers":[]}]}`}
	var out strings.Builder
	w := logcheck.Writer(t, &out)
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("got %v, want exit code 2", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "ROTATION_TARGETS") {
		t.Errorf("got %q, want one line naming ROTATION_TARGETS", out.String())
	}
}

// TestCommands runs the command line against the emulator with the same
// settings the host would pass.
func TestCommands(t *testing.T) {
	w := seed(t)
	env := append(w.env(t, w.emu.ClientID()), "LOG_FORMAT=json")
	runCmd := func(t *testing.T, stdin string, args ...string) (int, string, string) {
		t.Helper()
		return runBinaryIn(t, env, strings.NewReader(stdin), args...)
	}

	t.Run("status before", func(t *testing.T) {
		code, out, errOut := runCmd(t, "", "status")
		if code != 0 || !strings.Contains(out, "lagging") || !strings.Contains(out, "versionless") {
			t.Errorf("got exit %d\n%s%s\nwant 0 and a table with lagging and versionless servers", code, out, errOut)
		}
	})

	t.Run("rotate dry run", func(t *testing.T) {
		code, out, errOut := runCmd(t, "", "rotate", "--dry-run", "--json", w.key)
		var rep rotation.Report
		if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || !rep.DryRun {
			t.Errorf("got exit %d, %v\n%s%s\nwant 0 and a dry-run report", code, err, out, errOut)
		}
		if got, _ := w.emu.ServerKeyURL(w.ids[0]); got != w.v1.KID {
			t.Errorf("dry run moved a server to %s", got)
		}
	})

	t.Run("rotate dry run table", func(t *testing.T) {
		// Flags after the key URL count as flags.
		code, out, errOut := runCmd(t, "", "rotate", w.key, "--dry-run")
		if code != 0 {
			t.Fatalf("got exit %d\n%s%s\nwant 0", code, out, errOut)
		}
		for _, want := range []string{"(dry run: nothing changed)", "VERSION", "WOULD MOVE TO",
			"\n  would move: left alone by the dry run; a real run moves it to WOULD MOVE TO (JSON: outcome skipped, wouldPatch true)\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("got\n%s\nwant %q", out, want)
			}
		}
		row := regexp.MustCompile(`relay-1\s+would move\s+` + w.v1.Version[:12] + `\s+` + w.v2.Version[:12] + `\s`)
		if !row.MatchString(out) || strings.Contains(out, "NOW") {
			t.Errorf("got\n%s\nwant relay-1 shown on %s, would move to %s, and no NOW column", out, w.v1.Version[:12], w.v2.Version[:12])
		}
	})

	t.Run("rotate missing version", func(t *testing.T) {
		code, out, errOut := runCmd(t, "", "rotate", w.key+"/0123456789abcdef0123456789abcdef")
		if code != 1 || !strings.Contains(out, "error:") || strings.Contains(out, "SERVER") {
			t.Errorf("got exit %d\n%s%s\nwant 1, the error and no server table", code, out, errOut)
		}
	})

	t.Run("replay from stdin", func(t *testing.T) {
		blob, _ := json.Marshal([]any{w.emu.KeyEvent(emulator.KeyNewVersionCreated, w.v2, "kv")})
		code, out, errOut := runCmd(t, string(blob), "replay", "-")
		if code != 0 || !strings.Contains(out, "rotated") {
			t.Errorf("got exit %d\n%s%s\nwant 0 and rotated servers", code, out, errOut)
		}
		if got, _ := w.emu.ServerKeyURL(w.ids[0]); got != w.v2.KID {
			t.Errorf("got %s, want %s", got, w.v2.KID)
		}
	})

	t.Run("status after", func(t *testing.T) {
		code, out, errOut := runCmd(t, "", "status", "--json")
		var st handler.StatusResponse
		if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
			t.Fatalf("got exit %d, %v\n%s%s", code, err, out, errOut)
		}
		if got := st.Keys[0].SafeToDisable; len(got) != 1 || got[0] != w.v1.Version {
			t.Errorf("got safe to disable %v, want [%s]", got, w.v1.Version)
		}
	})

	t.Run("rotate failing server", func(t *testing.T) {
		if err := w.emu.DeleteServer(w.ids[2]); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := runCmd(t, "", "rotate", w.key)
		if code != 1 || !strings.Contains(out, "failed") {
			t.Errorf("got exit %d\n%s%s\nwant 1 and the failed server", code, out, errOut)
		}
	})
}

// TestStatusRefusedCredential: with the identity refused, status names
// the refusal once and keeps every table row on one line.
func TestStatusRefusedCredential(t *testing.T) {
	w := seed(t)
	code, out, errOut := runBinary(t, append(w.env(t, ""), "LOG_FORMAT=json"), "status")
	if code != 3 {
		t.Fatalf("got exit %d\n%s%s\nwant 3", code, out, errOut)
	}
	if got := strings.Count(out, "credential refused"); got != 1 {
		t.Errorf("got %d lines naming the refused credential, want 1:\n%s", got, out)
	}
	// One line naming the credential and its status, not azidentity's dump.
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "credential refused") &&
			(!strings.Contains(l, "managed identity refused (400)") || strings.Contains(l, "-----")) {
			t.Errorf("got %q, want the refusal in one line: managed identity refused (400): …", l)
		}
	}
	rows := 0
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "  rg-cmk/") {
			rows++
			if !strings.Contains(l, "unreachable") {
				t.Errorf("got row %q, want the server's state on its own line", l)
			}
			if strings.Contains(l, w.ids[0]) {
				t.Errorf("got row %q, want the error without the server ID the row names", l)
			}
		}
	}
	if got := strings.Count(out, "same error as rg-cmk/relay-1"); got != len(w.ids)-1 {
		t.Errorf("got %d rows naming relay-1's error, want %d (each distinct error once):\n%s", got, len(w.ids)-1, out)
	}
	// Every line is the credential line, a key line, a table row, blank or a note.
	lines := strings.Count(out, "\n")
	if rows != len(w.ids) || lines > rows+8 {
		t.Errorf("got %d rows in %d lines, want %d rows and a few lines more:\n%s", rows, lines, len(w.ids), out)
	}
}

// TestStatusCredentialHints: status names what to check for the way the
// token endpoint failed, once across its output and logs, and gives up on
// an endpoint that does not answer within seconds.
func TestStatusCredentialHints(t *testing.T) {
	w := seed(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/msi/token"
	ln.Close()
	with := func(k, v string) []string {
		var env []string
		for _, kv := range append(w.env(t, w.emu.ClientID()), "LOG_FORMAT=json") {
			if !strings.HasPrefix(kv, k+"=") {
				env = append(env, kv)
			}
		}
		return append(env, k+"="+v)
	}
	for _, tt := range []struct {
		name, verdict, hint, notWant string
		env                          []string
	}{
		{"identity header copied by hand", "credential refused: ", "refused IDENTITY_HEADER: App Service sets it",
			"AZURE_CLIENT_ID", with("IDENTITY_HEADER", "0123456789abcdef")},
		{"endpoint unreachable", "credential check failed: ", "nothing answers at IDENTITY_ENDPOINT " + closed,
			"credential refused", with("IDENTITY_ENDPOINT", closed)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			code, out, errOut := runBinary(t, tt.env, "status")
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("status took %v, want it to give up on the token endpoint within seconds", took)
			}
			if code == 0 {
				t.Errorf("got exit 0, want a failure")
			}
			if !strings.HasPrefix(out, tt.verdict) || strings.Contains(out+errOut, tt.notWant) {
				t.Errorf("got\n%s\nwant it to begin %q and not say %q", out, tt.verdict, tt.notWant)
			}
			if got := strings.Count(out+errOut, tt.hint); got != 1 {
				t.Errorf("got the hint %q %d times in\n%s%s\nwant once", tt.hint, got, out, errOut)
			}
		})
	}
}

// TestServe_WarnsOfALongDeadline: a ROTATION_DEADLINE beyond what Event
// Grid waits for is accepted, with one warning at start.
func TestServe_WarnsOfALongDeadline(t *testing.T) {
	w := seed(t)
	for _, tt := range []struct {
		deadline string
		warnings int
	}{{"28s", 0}, {"29s", 1}, {"2m", 1}} {
		t.Run(tt.deadline, func(t *testing.T) {
			h := start(t, append(w.env(t, w.emu.ClientID()), "ROTATION_DEADLINE="+tt.deadline))
			if err := h.Close(); err != nil {
				t.Fatalf("got exit %v, want a clean exit", err)
			}
			if got := strings.Count(h.Output(), "ROTATION_DEADLINE leaves the host no time"); got != tt.warnings {
				t.Errorf("got %d warnings, want %d:\n%s", got, tt.warnings, h.Output())
			}
		})
	}
}

// TestServe_WarnsOfNoReconcileSchedule: without ROTATION_RECONCILE_SCHEDULE
// the host cannot load the Reconcile timer; serve says so once at start
// and serves the rest.
func TestServe_WarnsOfNoReconcileSchedule(t *testing.T) {
	w := seed(t)
	for _, tt := range []struct {
		name     string
		schedule bool
		warnings int
	}{{"set", true, 0}, {"not set", false, 1}} {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			for _, kv := range w.env(t, w.emu.ClientID()) {
				if tt.schedule || !strings.HasPrefix(kv, "ROTATION_RECONCILE_SCHEDULE=") {
					env = append(env, kv)
				}
			}
			h := start(t, env)
			if st := getStatus(t, h); len(st.Keys) != 1 {
				t.Errorf("got %d keys in status, want 1: the API serves", len(st.Keys))
			}
			if err := h.Close(); err != nil {
				t.Fatalf("got exit %v, want a clean exit", err)
			}
			var warnings int
			for _, l := range h.Lines() {
				var rec map[string]any
				if json.Unmarshal([]byte(l), &rec) == nil && rec["level"] == "WARN" && rec["setting"] == "ROTATION_RECONCILE_SCHEDULE" {
					warnings++
					if msg, _ := rec["msg"].(string); !strings.Contains(msg, "Reconcile") || !strings.Contains(msg, "never reconciled") {
						t.Errorf("got %q, want the consequence: Reconcile never runs", msg)
					}
				}
			}
			if warnings != tt.warnings {
				t.Errorf("got %d warnings, want %d:\n%s", warnings, tt.warnings, h.Output())
			}
		})
	}
}

// TestDiscover lists two resource groups: the mapped servers stay, a
// server on the mapped key's versionless URL is added (the rotation
// reports versionless servers), and a server on an unmapped key or
// without a customer-managed key is left out. No key is added.
func TestDiscover(t *testing.T) {
	w := seed(t)
	other, err := w.vault.CreateKey("other", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(rg, name, keyURL string) string {
		t.Helper()
		id, err := w.emu.PutServer(emulator.ServerSpec{ResourceGroup: rg, Name: name, KeyURL: keyURL})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	versionless := put("rg-b", "relay-versionless", w.key)
	onOther := put("rg-b", "relay-other", other.KID)
	plain := put(emulator.DefaultResourceGroup, "relay-plain", "")
	scope := "/subscriptions/" + emulator.DefaultSubscription + "/resourceGroups/"
	args := []string{"discover", "--scope", scope + emulator.DefaultResourceGroup, "--scope", scope + "rg-b"}
	env := append(w.env(t, w.emu.ClientID()), "LOG_LEVEL=warn")

	t.Run("map", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, args...)
		if code != 0 {
			t.Fatalf("got exit %d\n%s%s\nwant 0", code, out, errOut)
		}
		targets, err := rotation.ParseTargets([]byte(out))
		if err != nil {
			t.Fatalf("got a map ROTATION_TARGETS refuses: %v\n%s", err, out)
		}
		want := []string{w.key + " " + strings.Join(append(append([]string{}, w.ids...), versionless), " ")}
		var got []string
		for _, tg := range targets.All() {
			got = append(got, tg.Key.String()+" "+strings.Join(tg.Servers, " "))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("map (-want +got):\n%s", diff)
		}
	})

	t.Run("json", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, append(args, "--json")...)
		if code != 0 {
			t.Fatalf("got exit %d\n%s%s\nwant 0", code, out, errOut)
		}
		var res struct {
			Servers []struct{ Server, Result string }
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, s := range res.Servers {
			got[strings.ToLower(s.Server)] = s.Result
		}
		want := map[string]string{strings.ToLower(versionless): "added", strings.ToLower(onOther): "key not in the map",
			strings.ToLower(plain): "no customer-managed key"}
		for _, id := range w.ids {
			want[strings.ToLower(id)] = "already mapped"
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("servers found (-want +got):\n%s", diff)
		}
	})

	t.Run("listing refused", func(t *testing.T) {
		w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, Status: http.StatusServiceUnavailable})
		code, out, errOut := runBinary(t, env, args...)
		if code != 3 || out != "" {
			t.Errorf("got exit %d, stdout %q\n%s\nwant 3 and no map", code, out, errOut)
		}
	})
}
