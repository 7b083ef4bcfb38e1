package main_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// TestReconcileDriftReasons: when servers fail alike, the table names an
// earlier row for a repeated error, but the drift summary gives each
// server its own reason.
func TestReconcileDriftReasons(t *testing.T) {
	w := seed(t)
	w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: http.StatusBadRequest, Code: "InvalidKeyUrl"})
	code, out, errOut := runBinary(t, append(w.env(t, w.emu.ClientID()), "LOG_LEVEL=error"), "reconcile")
	if code != 1 {
		t.Errorf("got exit %d\n%s%s\nwant 1", code, out, errOut)
	}
	_, summary, ok := strings.Cut(out, "drift not fixed")
	if !ok {
		t.Fatalf("got\n%s\nwant a drift summary", out)
	}
	rows := regexp.MustCompile(`(?m)^  (rg-cmk/relay-\S+): (.*)$`).FindAllStringSubmatch(summary, -1)
	if len(rows) < 2 {
		t.Fatalf("got drift\n%s\nwant a line for each failed server", summary)
	}
	for _, r := range rows {
		if strings.Contains(r[2], "same error as") || !strings.Contains(r[2], "InvalidKeyUrl") {
			t.Errorf("got drift line %q, want %s's own reason", r[0], r[1])
		}
	}
	if !strings.Contains(out[:len(out)-len(summary)], "same error as rg-cmk/relay-") {
		t.Errorf("got\n%s\nwant the table to name an earlier row for a repeated error", out)
	}
}
