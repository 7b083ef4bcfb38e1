package main_test

import (
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// TestDiscoverEmptyScope: a scope that lists no server is named on
// stderr; when every scope is empty, discover prints no map and exits 1.
func TestDiscoverEmptyScope(t *testing.T) {
	w := seed(t)
	env := append(w.env(t, w.emu.ClientID()), "LOG_LEVEL=warn")
	const nope = "/subscriptions/nope"
	warning := "no Fluid Relay servers in " + nope + ": check the subscription ID and that the identity can read it"
	full := "/subscriptions/" + emulator.DefaultSubscription

	t.Run("every scope empty", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "discover", "--scope", nope)
		if code != 1 || out != "" || !strings.Contains(errOut, warning) {
			t.Errorf("got exit %d, stdout %q\n%s\nwant 1, no map, and %q", code, out, errOut, warning)
		}
	})

	t.Run("one scope empty", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "discover", "--scope", nope, "--scope", full)
		if code != 0 || !strings.Contains(errOut, warning) || strings.Contains(errOut, "servers in "+full) {
			t.Errorf("got exit %d\n%s\nwant 0 and a warning for %s only", code, errOut, nope)
		}
		if _, err := rotation.ParseTargets([]byte(out)); err != nil {
			t.Errorf("got a map ROTATION_TARGETS refuses: %v\n%s", err, out)
		}
	})
}
