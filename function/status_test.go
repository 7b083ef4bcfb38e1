package main_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// TestStatusExit: status exits 3 when every problem may clear on a later
// run (Resource Manager throttling every read), 1 when one needs a person
// (a deleted server), and says so in status --help.
func TestStatusExit(t *testing.T) {
	w := seed(t)
	env := append(w.env(t, w.emu.ClientID()), "LOG_LEVEL=error")

	t.Run("throttled reads", func(t *testing.T) {
		remove := w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, Status: http.StatusTooManyRequests, RetryAfter: time.Second})
		defer remove()
		code, out, errOut := runBinary(t, env, "status")
		if code != 3 || strings.Count(out, "unreachable") != len(w.ids) {
			t.Errorf("got exit %d\n%s%s\nwant 3 and every server unreachable", code, out, errOut)
		}
	})

	t.Run("server deleted", func(t *testing.T) {
		if err := w.emu.DeleteServer(w.ids[2]); err != nil {
			t.Fatal(err)
		}
		remove := w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, PathSuffix: "relay-1", Status: http.StatusTooManyRequests})
		defer remove()
		code, out, errOut := runBinary(t, env, "status")
		if code != 1 || !strings.Contains(out, "not-found") || !strings.Contains(out, "unreachable") {
			t.Errorf("got exit %d\n%s%s\nwant 1, a not-found and an unreachable server", code, out, errOut)
		}
	})

	t.Run("help", func(t *testing.T) {
		code, out, _ := runBinary(t, env, "status", "--help")
		for _, want := range []string{"1 something needs a person", "3 only problems a later run may clear", "unreachable servers"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("got exit %d\n%s\nwant 0 and %q on stdout", code, out, want)
			}
		}
	})
}

// TestStatusKeyRecreated: after the key is deleted and created again
// under its name, status says of every pinned server that its version no
// longer exists, and exits 1: a person must restore it.
func TestStatusKeyRecreated(t *testing.T) {
	w := seed(t)
	if err := w.vault.DeleteKey("cmk"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runBinary(t, append(w.env(t, w.emu.ClientID()), "LOG_LEVEL=error"), "status", "--json")

	if code != 1 {
		t.Errorf("got exit %d\n%s%s\nwant 1", code, out, errOut)
	}
	var st struct {
		Keys []struct {
			Servers []struct{ ID, State, Error string }
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Keys) != 1 {
		t.Fatalf("got %v decoding\n%s\nwant one key", err, out)
	}
	gone := 0
	for _, s := range st.Keys[0].Servers {
		if s.State == "gone" && strings.Contains(s.Error, w.v1.Version) && strings.Contains(s.Error, "no longer exists") {
			gone++
		}
	}
	if pinned := len(w.ids) - 1; gone != pinned { // relay-follow is versionless
		t.Errorf("got %d servers gone with a plain error in\n%s\nwant %d", gone, out, pinned)
	}
}
