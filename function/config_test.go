package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/internal/fakehost"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// TestConfigTied runs the app as the host would from copies of the
// repository's host.json and function.json files: unchanged, and with
// forwarding off (the handler's JSON mode), every function works; each
// change the handler does not follow breaks the run.
func TestConfigTied(t *testing.T) {
	type edit struct{ file, old, new string }
	tests := []struct {
		name  string
		edits []edit
		want  string // in the run's error; "" for a run that works
	}{
		{"as in the repository", nil, ""},
		{"forwarding off", []edit{{"host.json", `"enableForwardingHttpRequest": true`, `"enableForwardingHttpRequest": false`}}, ""},
		{"host.json arguments", []edit{{"host.json", `"arguments": ["serve"]`, `"arguments": ["serv"]`}}, "process exited"},
		{"another executable", []edit{{"host.json", `"defaultExecutablePath": "cmkrotator"`, `"defaultExecutablePath": "handler"`}}, "defaultExecutablePath"},
		{"event binding renamed", []edit{{"KeyNewVersionCreated/function.json", `"name": "event"`, `"name": "evt"`}}, "not rotated"},
		{"rotate route changed", []edit{{"Rotate/function.json", `"route": "rotate"`, `"route": "rotation"`}}, "POST /api/rotate: got 404"},
		{"status method changed", []edit{{"Status/function.json", `"methods": ["get"]`, `"methods": ["post"]`}}, "GET /api/status: got 404"},
		{"replay route changed", []edit{{"Replay/function.json", `"route": "replay"`, `"route": "replays"`}}, "POST /api/replay: got 404"},
		{"reconcile schedule setting renamed", []edit{{"Reconcile/function.json", `%ROTATION_RECONCILE_SCHEDULE%`, `%RECONCILE%`}}, "RECONCILE"},
		{"timer binding type changed", []edit{{"Reconcile/function.json", `"timerTrigger"`, `"eventGridTrigger"`}}, "not timerTrigger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := copyApp(t)
			for _, e := range tt.edits {
				p := filepath.Join(root, e.file)
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(data), e.old) {
					t.Fatalf("%s has no %s to change", e.file, e.old)
				}
				if err := os.WriteFile(p, []byte(strings.Replace(string(data), e.old, e.new, 1)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := smoke(t, root)
			t.Logf("run ended: %v", err)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want the run to work", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want the run to fail with %q", err, tt.want)
			}
		})
	}
}

// copyApp copies the repository's host.json and function folders into a
// temporary app root.
func copyApp(t *testing.T) string {
	t.Helper()
	src, dst := appRoot(t), t.TempDir()
	files, err := filepath.Glob(filepath.Join(src, "*", "function.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(files, filepath.Join(src, "host.json")) {
		rel, _ := filepath.Rel(src, f)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, rel), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// smoke starts the app in root against a seeded emulator and drives each
// function once, as a client and the host's triggers would: an event
// rotates the pinned servers, status and a dry run answer, a replay is
// reported, and the timer reconciles. It returns the first thing that
// went wrong.
func smoke(t *testing.T, root string) error {
	w := seed(t)
	ctx := context.Background()
	h, err := fakehost.Start(ctx, root, w.env(t, w.emu.ClientID()),
		fakehost.Options{Executable: build(t), Output: logcheck.Writer(t, nil)})
	if err != nil {
		return err
	}
	defer h.Close()

	nv, err := w.vault.RotateKey("cmk")
	if err != nil {
		return err
	}
	ev, _ := json.Marshal(w.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv"))
	res, err := h.EventGrid(ctx, "KeyNewVersionCreated", ev, fakehost.EventOptions{})
	if err != nil {
		return err
	}
	if !res.Succeeded {
		return fmt.Errorf("KeyNewVersionCreated: %s", res.Failure)
	}
	for _, id := range w.ids[:3] {
		if got, _ := w.emu.ServerKeyURL(id); got != nv.KID {
			return fmt.Errorf("KeyNewVersionCreated: server %s not rotated: on %s", id, got)
		}
	}

	call := func(method, path, body string, v any) error {
		req := httptest.NewRequest(method, "https://cmk.azurewebsites.net"+path, strings.NewReader(body))
		if body == "" {
			req = httptest.NewRequest(method, "https://cmk.azurewebsites.net"+path, nil)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-functions-key", h.FunctionKey())
		resp, err := h.Do(ctx, req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: got %d %s, want 200", method, path, resp.StatusCode, data)
		}
		return json.Unmarshal(data, v)
	}
	var st handler.StatusResponse
	if err := call(http.MethodGet, "/api/status", "", &st); err != nil {
		return err
	}
	if len(st.Keys) != 1 {
		return fmt.Errorf("GET /api/status: got %d keys, want 1", len(st.Keys))
	}
	var rep rotation.Report
	if err := call(http.MethodPost, "/api/rotate", `{"key":"`+w.key+`","dryRun":true}`, &rep); err != nil {
		return err
	}
	if !rep.DryRun || rep.TargetVersion != nv.Version {
		return fmt.Errorf("POST /api/rotate: got %+v, want a dry run to %s", rep, nv.Version)
	}
	var replayed handler.ReplayResponse
	if err := call(http.MethodPost, "/api/replay", "["+string(ev)+"]", &replayed); err != nil {
		return err
	}
	if len(replayed.Results) != 1 || replayed.Results[0].Report == nil {
		return fmt.Errorf("POST /api/replay: got %+v, want the event's report", replayed)
	}

	if err := w.emu.SetServerKeyURL(w.ids[0], w.v1.KID); err != nil {
		return err
	}
	res, err = h.Timer(ctx, "Reconcile", fakehost.TimerOptions{})
	if err != nil {
		return err
	}
	if got, _ := w.emu.ServerKeyURL(w.ids[0]); !res.Succeeded || got != nv.KID {
		return errors.New("Reconcile: " + res.Failure + ": server " + w.ids[0] + " on " + got)
	}
	return nil
}
