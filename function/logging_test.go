package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/cmkrotator/cmkrotator/internal/logcheck"
)

// TestLogger_JSONDurations: the host's JSON lines show durations as
// people write them, not as nanoseconds.
func TestLogger_JSONDurations(t *testing.T) {
	var out bytes.Buffer
	w := logcheck.Writer(t, &out)
	newLogger("json", slog.LevelInfo, w, w).Info("served", "elapsed", 1500*time.Millisecond)
	var line map[string]any
	if err := json.Unmarshal(out.Bytes(), &line); err != nil {
		t.Fatalf("got %q, not one JSON line: %v", out.String(), err)
	}
	if got := line["elapsed"]; got != "1.5s" {
		t.Errorf("got elapsed %#v, want \"1.5s\"", got)
	}
}
