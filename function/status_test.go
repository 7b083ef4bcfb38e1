package main_test

import (
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
