package main_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
	"github.com/cmkrotator/cmkrotator/internal/azurite"
)

// oneDocument decodes stdout, which must hold exactly one JSON object
// and nothing else, into v.
func oneDocument(t *testing.T, stdout string, v any) {
	t.Helper()
	if !strings.HasPrefix(strings.TrimSpace(stdout), "{") {
		t.Fatalf("got stdout\n%s\nwant one JSON object", stdout)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("got stdout\n%s\nwant one JSON object: %v", stdout, err)
	}
	var more json.RawMessage
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		t.Fatalf("got stdout\n%s\nwant one JSON object and nothing after it (%v)", stdout, err)
	}
}

// TestRecoveryJSON runs replay, replay --republish and pull with --json
// through their failures: each prints exactly one JSON document on
// stdout, or nothing at all for bad usage, never text.
func TestRecoveryJSON(t *testing.T) {
	w := seed(t)
	eg, egURL, env := w.eventGrid(t)
	eg.AddTopic("recovery", eventgrid.TopicOptions{})
	endpoint := egURL + "/customtopics/recovery/api/events"
	missing := egURL + "/customtopics/missing/api/events"
	env = append(env, "LOG_LEVEL=error", "EVENTGRID_KEY="+eventgrid.DefaultKey)

	az := azurite.Start(t)
	c, err := container.NewClientFromConnectionString(az.ConnectionString(), "deadletters", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	blob := deadLetterBlob(t, w.emu.KeyEvent(emulator.KeyNewVersionCreated, w.v2, "kv"))
	if _, err := c.NewBlockBlobClient("KEYS-SUB/2024/5/1/7/a.json").UploadBuffer(t.Context(), blob, nil); err != nil {
		t.Fatal(err)
	}
	envStorage := append(env[:len(env):len(env)], "AZURE_STORAGE_CONNECTION_STRING="+az.ConnectionString())

	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, _ := json.Marshal(w.emu.KeyEvent(emulator.KeyNewVersionCreated, w.v2, "kv"))
	events := file("events.json", "["+string(good)+"]")
	partly := file("partly.json", "["+string(good)+`,{"id":"no-type","subject":"cmk"}]`)
	garbage := file("garbage.json", "not json")
	ce, _ := json.Marshal(w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.v2, "kv"))
	both := file("both.json", "["+string(good)+","+string(ce)+"]")

	type result struct {
		Sent        *int
		DryRun      bool
		Error       string
		Undecodable []json.RawMessage
		Results     *[]json.RawMessage
		Blobs       int
		Received    *int
	}
	tests := []struct {
		name  string
		env   []string
		args  []string
		code  int
		check func(t *testing.T, r result, stderr string)
	}{
		{name: "republish a file", env: env, args: []string{"replay", "--republish", endpoint, "--json", events}, code: 0,
			check: func(t *testing.T, r result, _ string) {
				if r.Sent == nil || *r.Sent != 1 || r.Undecodable == nil {
					t.Errorf("got %+v, want 1 sent and an empty undecodable list", r)
				}
			}},
		{name: "republish a dry run", env: env, args: []string{"replay", "--republish", endpoint, "--dry-run", "--json", events}, code: 0,
			check: func(t *testing.T, r result, _ string) {
				if !r.DryRun || r.Sent == nil || *r.Sent != 1 {
					t.Errorf("got %+v, want a dry run that would send 1", r)
				}
			}},
		{name: "republish a partly undecodable file", env: env, args: []string{"replay", "--republish", endpoint, "--json", partly}, code: 1,
			check: func(t *testing.T, r result, _ string) {
				if r.Sent == nil || *r.Sent != 1 || len(r.Undecodable) != 1 {
					t.Errorf("got %+v, want 1 sent and 1 undecodable", r)
				}
			}},
		{name: "republish to a missing topic", env: env, args: []string{"replay", "--republish", missing, "--json", events}, code: 1,
			check: func(t *testing.T, r result, stderr string) {
				if r.Sent == nil || *r.Sent != 0 || !strings.Contains(r.Error, "none of 1 sent") || !strings.Contains(stderr, "404") {
					t.Errorf("got %+v\n%s\nwant nothing sent, the error in the document and on stderr", r, stderr)
				}
			}},
		{name: "republish with a wrong key", env: append(env[:len(env):len(env)], "EVENTGRID_KEY=d3Jvbmc="),
			args: []string{"replay", "--republish", endpoint, "--json", events}, code: 3,
			check: func(t *testing.T, r result, _ string) {
				if r.Sent == nil || *r.Sent != 0 || !strings.Contains(r.Error, "401") {
					t.Errorf("got %+v, want nothing sent and the 401 in the document", r)
				}
			}},
		{name: "republish a file that is not JSON", env: env, args: []string{"replay", "--republish", endpoint, "--json", garbage}, code: 2},
		{name: "republish events of both schemas", env: env, args: []string{"replay", "--republish", endpoint, "--json", both}, code: 2,
			check: func(t *testing.T, _ result, stderr string) {
				if !strings.Contains(stderr, "but a topic takes one: nothing sent") {
					t.Errorf("got stderr\n%s\nwant it to say a topic takes one schema", stderr)
				}
			}},
		{name: "replay a file that is not JSON", env: env, args: []string{"replay", "--json", garbage}, code: 2},
		{name: "replay an empty prefix", env: envStorage, args: []string{"replay", "--dead-letter", "deadletters/NONE-SUB", "--json"}, code: 0,
			check: func(t *testing.T, r result, _ string) {
				if r.Results == nil || len(*r.Results) != 0 {
					t.Errorf("got results %v, want []", r.Results)
				}
			}},
		{name: "replay a missing container", env: envStorage, args: []string{"replay", "--dead-letter", "missing", "--json"}, code: 1,
			check: func(t *testing.T, r result, stderr string) {
				if r.Results == nil || len(*r.Results) != 0 || !strings.Contains(stderr, "list dead-letter blobs") {
					t.Errorf("got %+v\n%s\nwant results [] and the listing failure on stderr", r, stderr)
				}
			}},
		{name: "replay an IP host URL without account", env: envStorage,
			args: []string{"replay", "--dead-letter", "https://127.0.0.1:1/dl", "--json"}, code: 2,
			check: func(t *testing.T, _ result, stderr string) {
				const want = "for an IP host the URL names the account first: http://127.0.0.1:10000/{account}/{container}"
				if !strings.Contains(stderr, want) {
					t.Errorf("got stderr\n%s\nwant %q", stderr, want)
				}
			}},
		{name: "republish dead letters to a missing topic", env: envStorage,
			args: []string{"replay", "--dead-letter", "deadletters", "--republish", missing, "--json"}, code: 3,
			check: func(t *testing.T, r result, _ string) {
				if r.Results == nil || len(*r.Results) != 1 || r.Blobs != 1 {
					t.Errorf("got %+v, want the one blob, left for a later run", r)
				}
			}},
		{name: "pull with a bad endpoint", env: env, args: []string{"pull", "--endpoint", "http://x", "--topic", "t", "--subscription", "s", "--json"}, code: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runBinary(t, tt.env, tt.args...)
			if code != tt.code {
				t.Errorf("got exit %d\n%s%s\nwant %d", code, out, errOut, tt.code)
			}
			if tt.check == nil {
				if out != "" || errOut == "" {
					t.Errorf("got stdout\n%s\nstderr\n%s\nwant nothing on stdout and the reason on stderr", out, errOut)
				}
				return
			}
			if tt.code == 2 {
				if out != "" {
					t.Errorf("got stdout\n%s\nwant nothing", out)
				}
				tt.check(t, result{}, errOut)
				return
			}
			var r result
			oneDocument(t, out, &r)
			tt.check(t, r, errOut)
		})
	}
}

// TestPullCommand_Refused: pull --once whose receives Event Grid refuses
// with 403 gives up after a few tries, exit 3 (a role assignment may
// still be on its way), with one JSON summary and the role named.
func TestPullCommand_Refused(t *testing.T) {
	w := seed(t)
	eg, endpoint, env := w.eventGrid(t)
	eg.AddNamespaceTopic("keys").AddSubscription("rotator", eventgrid.SubscriptionOptions{})
	eg.InjectFault(eventgrid.Fault{Operation: eventgrid.OpReceive, Status: http.StatusForbidden})
	env = append(env, "EVENTGRID_KEY="+eventgrid.DefaultKey)

	code, out, errOut := runBinary(t, env, "pull", "--once", "--json", "--endpoint", endpoint, "--topic", "keys", "--subscription", "rotator")

	var sum struct{ Receives, Received int }
	oneDocument(t, out, &sum)
	if code != 3 || sum.Received != 0 {
		t.Errorf("got exit %d, %+v\n%s\nwant 3 and nothing received", code, sum, errOut)
	}
	if !strings.Contains(errOut, "EventGrid Data Receiver role") {
		t.Errorf("got stderr\n%s\nwant the role named", errOut)
	}
	receives := 0
	for _, r := range eg.Requests() {
		if r.Operation == eventgrid.OpReceive {
			receives++
		}
	}
	if receives != 3 {
		t.Errorf("got %d receives, want 3", receives)
	}
}
