package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

// TestLogger_JSONDurations: the host's JSON lines show durations as
// people write them, not as nanoseconds.
func TestLogger_JSONDurations(t *testing.T) {
	var out bytes.Buffer
	newLogger("json", slog.LevelInfo, &out, &out).Info("served", "elapsed", 1500*time.Millisecond)
	var line map[string]any
	if err := json.Unmarshal(out.Bytes(), &line); err != nil {
		t.Fatalf("got %q, not one JSON line: %v", out.String(), err)
	}
	if got := line["elapsed"]; got != "1.5s" {
		t.Errorf("got elapsed %#v, want \"1.5s\"", got)
	}
}
