package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/handler"
)

// TestReplayUndecodable: replay processes the events of a file that
// decode and lists each one that does not, as POST /api/replay does; a
// file with nothing to process is bad usage.
func TestReplayUndecodable(t *testing.T) {
	w := seed(t)
	env := append(w.env(t, w.emu.ClientID()), "LOG_LEVEL=error")
	write := func(t *testing.T, body string) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "events.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, err := json.Marshal(w.emu.KeyEvent(emulator.KeyNewVersionCreated, w.v2, "kv"))
	if err != nil {
		t.Fatal(err)
	}
	noType := `{"id":"evt-no-type","subject":"cmk"}`
	mixed := write(t, "["+string(good)+", 42, "+noType+"]")

	t.Run("table", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "replay", "--dry-run", mixed)
		if code != 1 {
			t.Errorf("got exit %d\n%s%s\nwant 1", code, out, errOut)
		}
		for _, row := range []string{`(?m)^0\s+\S+\s+KeyNewVersionCreated\s+\S+/keys/cmk\s+ok$`,
			`(?m)^1\s+-\s+-\s+-\s+undecodable: \S`, `(?m)^2\s+evt-no-type\s+-\s+-\s+undecodable: .*no event type`,
			`(?m)^2 events undecodable, not processed$`} {
			if !regexp.MustCompile(row).MatchString(out) {
				t.Errorf("got\n%s\nwant a line matching %s", out, row)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "replay", "--dry-run", "--json", mixed)
		var resp handler.ReplayResponse
		if err := json.Unmarshal([]byte(out), &resp); code != 1 || err != nil {
			t.Fatalf("got exit %d, %v\n%s%s\nwant 1 and JSON", code, err, out, errOut)
		}
		var got [][2]string
		for _, r := range resp.Results {
			ignored, _, _ := strings.Cut(r.Ignored, ":")
			got = append(got, [2]string{r.EventID, ignored})
		}
		want := [][2]string{{resp.Results[0].EventID, ""}, {"", "undecodable"}, {"evt-no-type", "undecodable"}}
		if diff := cmp.Diff(want, got); diff != "" || resp.Results[0].Report == nil {
			t.Errorf("results (-want +got):\n%s\nwant event 0 processed", diff)
		}
	})

	for _, tt := range []struct{ name, body, want string }{
		{"not JSON", "not json", "decode events from"},
		{"nothing decodes", "[42, " + noType + "]", "no event decodes"},
		{"empty", "[]", "no events in"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := write(t, tt.body)
			code, out, errOut := runBinary(t, env, "replay", p)
			if code != 2 || out != "" || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, p) {
				t.Errorf("got exit %d, stdout %q\n%s\nwant 2, nothing on stdout, and %q naming %s", code, out, errOut, tt.want, p)
			}
		})
	}
}
