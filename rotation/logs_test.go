package rotation_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// lockedBuffer serialises writes from concurrent rotations.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records decodes the JSON log lines written so far.
func (l *lockedBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.b.Bytes()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, rec)
	}
	return out
}

// Every log line about a server names the server, the key and the
// version, whatever became of the server: rotated, left alone, blocked,
// gone, refused by Resource Manager, or lost to a panic.
func TestRotate_ServerLogsNameKeyAndVersion(t *testing.T) {
	w := newWorld(t, 6)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.emu.SetServerKeyURL(w.ids[1], v2.KID); err != nil {
		t.Fatal(err)
	}
	if err := w.vault.SetEnabled("cmk", v2.Version, false); err != nil {
		t.Fatal(err)
	}
	v3, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.emu.SetServerKeyURL(w.ids[2], w.key.String()); err != nil {
		t.Fatal(err)
	}
	if err := w.emu.DeleteServer(w.ids[3]); err != nil {
		t.Fatal(err)
	}
	w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, PathSuffix: "/relay-5",
		Status: http.StatusBadRequest, Code: "InvalidRequestContent"})
	var logs lockedBuffer
	r := w.rotatorWith(t, func(c *rotation.Config) {
		c.Servers = panicky{Servers: c.Servers, id: w.ids[5]}
		c.Logger = slog.New(slog.NewJSONHandler(logcheck.Writer(t, &logs), nil))
	})

	dry := r.Rotate(t.Context(), rotation.Request{Key: w.key.WithVersion(v3.Version), DryRun: true})
	rep := r.Rotate(t.Context(), rotation.Request{Key: w.key.WithVersion(v3.Version)})

	want := []rotation.Outcome{rotation.Rotated, rotation.Failed, rotation.Skipped, rotation.Failed,
		rotation.Failed, rotation.Failed}
	for i, s := range rep.Servers {
		if s.Outcome != want[i] {
			t.Errorf("%s: got %s (%s), want %s", s.ID, s.Outcome, s.Reason, want[i])
		}
	}
	if len(dry.Servers) != 6 || len(rep.Servers) != 6 {
		t.Fatalf("got %d and %d servers, want 6 in each report", len(dry.Servers), len(rep.Servers))
	}
	msgs := map[string]bool{}
	for _, rec := range logs.records(t) {
		if _, ok := rec["server_id"]; !ok {
			continue
		}
		msgs[rec["msg"].(string)] = true
		for _, k := range []string{"key_name", "key_version"} {
			if v, _ := rec[k].(string); v == "" {
				t.Errorf("log %q about %v: got %s %q, want it set", rec["msg"], rec["server_id"], k, v)
			}
		}
	}
	for _, m := range []string{"dry run: would rotate", "server rotated", "server left alone",
		"server cannot be rotated", "server not rotated", "server not rotated: internal error"} {
		if !msgs[m] {
			t.Errorf("no log %q about a server, want one", m)
		}
	}
}
