package main_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// An event for a version Key Vault does not have still moves the
// servers to the current version, and the table says so in a note, as
// the JSON does.
func TestReplayPrintsNotes(t *testing.T) {
	w := seed(t)
	missing := w.v2
	missing.Version = strings.Repeat("f", 32)
	missing.KID = w.key + "/" + missing.Version
	event, err := json.Marshal([]emulator.EventGridEvent{w.emu.KeyEvent(emulator.KeyNewVersionCreated, missing, "kv")})
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runBinaryIn(t, append(w.env(t, w.emu.ClientID()), "LOG_LEVEL=error"), bytes.NewReader(event), "replay", "-")

	if code != 0 {
		t.Errorf("got exit %d\n%s%s\nwant 0: the servers moved to the current version", code, out, errOut)
	}
	want := "note: the event's version " + missing.Version + " was not found in Key Vault"
	if !strings.Contains(out, want) {
		t.Errorf("got\n%s\nwant a line with %q", out, want)
	}
}
