package main_test

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
	"github.com/cmkrotator/cmkrotator/internal/azurite"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
)

// runBinary runs cmkrotator with env and returns its exit code and
// output.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	return runBinaryIn(t, env, nil, args...)
}

// runBinaryIn is runBinary with stdin (nil: none). Its output is scanned
// by logcheck when t ends.
func runBinaryIn(t *testing.T, env []string, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(build(t), args...)
	cmd.Env = env
	cmd.Stdin = stdin
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = logcheck.Writer(t, &stdout), logcheck.Writer(t, &stderr)
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatal(err)
	return 0, "", ""
}

func deadLetterBlob(t *testing.T, events ...any) []byte {
	t.Helper()
	var out []map[string]any
	for _, ev := range events {
		b, _ := json.Marshal(ev)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m["deadLetterReason"], m["deliveryAttempts"] = "MaxDeliveryAttemptsExceeded", 30
		out = append(out, m)
	}
	b, _ := json.Marshal(out)
	return b
}

func TestReplayDeadLetterCommand(t *testing.T) {
	w := seed(t)
	az := azurite.Start(t)
	c, err := container.NewClientFromConnectionString(az.ConnectionString(), "deadletters", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{
		"KEYS-SUB/2024/5/1/7/a.json":  deadLetterBlob(t, w.emu.KeyEvent(emulator.KeyNewVersionCreated, w.v2, "kv")),
		"KEYS-SUB/2024/5/1/8/b.json":  deadLetterBlob(t, w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.v1, "kv")),
		"OTHER-SUB/2024/5/1/8/c.json": deadLetterBlob(t, w.emu.KeyEvent(emulator.KeyNewVersionCreated, w.v2, "kv")),
	}
	for name, body := range blobs {
		if _, err := c.NewBlockBlobClient(name).UploadBuffer(t.Context(), body, nil); err != nil {
			t.Fatal(err)
		}
	}
	env := append(w.env(t, w.emu.ClientID()), "LOG_FORMAT=json", "AZURE_STORAGE_CONNECTION_STRING="+az.ConnectionString())
	location := az.BlobEndpoint() + "/deadletters/KEYS-SUB"

	t.Run("dry run", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "replay", "--dead-letter", location, "--dry-run")
		if code != 0 || !strings.Contains(out, "2 replayed (dry run: nothing marked)") {
			t.Errorf("got exit %d\n%s%s\nwant 0 and two blobs judged", code, out, errOut)
		}
		if got, _ := w.emu.ServerKeyURL(w.ids[0]); got != w.v1.KID {
			t.Errorf("dry run moved a server to %s", got)
		}
	})

	t.Run("replay", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "replay", "--dead-letter", location)
		if code != 0 || !strings.Contains(out, "2 replayed, 0 left for a later run") || !strings.Contains(out, "ok, marked") {
			t.Errorf("got exit %d\n%s%s\nwant 0 and two blobs marked", code, out, errOut)
		}
		if got, _ := w.emu.ServerKeyURL(w.ids[0]); got != w.v2.KID {
			t.Errorf("got %s, want %s", got, w.v2.KID)
		}
	})

	t.Run("again is a no-op", func(t *testing.T) {
		w.emu.ResetRequests()
		code, out, errOut := runBinary(t, env, "replay", "--dead-letter", location, "--json")
		var sum struct{ Blobs, Done, Replayed int }
		if err := json.Unmarshal([]byte(out), &sum); err != nil || code != 0 {
			t.Fatalf("got exit %d, %v\n%s%s", code, err, out, errOut)
		}
		if sum.Blobs != 2 || sum.Done != 2 || sum.Replayed != 0 {
			t.Errorf("got %+v, want 2 blobs, both already done", sum)
		}
		for _, r := range w.emu.Requests() {
			if r.Service == "arm" {
				t.Errorf("second run called Resource Manager: %s %s", r.Method, r.Path)
			}
		}
	})

	t.Run("since", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "replay", "--dead-letter", "deadletters", "--since", "2024-05-01T08:30:00Z", "--again")
		if code != 0 || !strings.Contains(out, "3 blobs: 2 replayed") || !strings.Contains(out, "1 before --since") {
			t.Errorf("got exit %d\n%s%s\nwant 0, two of three blobs replayed", code, out, errOut)
		}
	})
}

// TestReconcileCommand: an IaC revert is moved forward and reported; a
// key recreated under the same name is drift a person must fix.
func TestReconcileCommand(t *testing.T) {
	w := seed(t)
	env := append(w.env(t, w.emu.ClientID()), "LOG_FORMAT=json")
	if code, out, errOut := runBinary(t, env, "rotate", w.key); code != 0 {
		t.Fatalf("rotate: exit %d\n%s%s", code, out, errOut)
	}
	if err := w.emu.SetServerKeyURL(w.ids[1], w.v1.KID); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runBinary(t, env, "reconcile", "--dry-run")
	if code != 0 || !strings.Contains(out, "1 key, 1 server would move to the current version, 2 already current") ||
		strings.Contains(out, " moved") {
		t.Errorf("dry run: got exit %d\n%s%s\nwant 0 and the reverted server that would move", code, out, errOut)
	}
	if got, _ := w.emu.ServerKeyURL(w.ids[1]); got != w.v1.KID {
		t.Errorf("dry run moved a server to %s", got)
	}

	code, out, errOut = runBinary(t, env, "reconcile")
	if code != 0 || !strings.Contains(out, "1 key, 1 server moved to the current version, 2 already current") ||
		!strings.Contains(out, "no drift left") {
		t.Errorf("got exit %d\n%s%s\nwant 0, the reverted server moved", code, out, errOut)
	}
	if got, _ := w.emu.ServerKeyURL(w.ids[1]); got != w.v2.KID {
		t.Errorf("got %s, want %s", got, w.v2.KID)
	}

	if err := w.vault.DeleteKey("cmk"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	w.emu.ResetRequests()
	code, out, errOut = runBinary(t, env, "reconcile", "--json")
	var res struct {
		Drift []struct{ Server, Version, Reason string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 {
		t.Fatalf("got exit %d, %v\n%s%s\nwant 1 and JSON", code, err, out, errOut)
	}
	if len(res.Drift) != 3 {
		t.Errorf("got drift %+v, want the three pinned servers", res.Drift)
	}
	for _, d := range res.Drift {
		if d.Version != w.v2.Version || !strings.Contains(d.Reason, "no longer exists") {
			t.Errorf("got %+v, want version %s named as no longer existing", d, w.v2.Version)
		}
	}
	for _, r := range w.emu.Requests() {
		if r.Service == "arm" && r.Method == "PATCH" {
			t.Errorf("reconcile PATCHed %s", r.Path)
		}
	}
}

// namespace starts an Event Grid namespace emulator over TLS with topic
// keys and its subscription rotator, and returns them with the settings
// pull needs: eventGrid's and the namespace's.
func (w *world) namespace(t *testing.T) (*eventgrid.NamespaceTopic, *eventgrid.Subscription, []string) {
	t.Helper()
	eg, endpoint, env := w.eventGrid(t)
	topic := eg.AddNamespaceTopic("keys")
	sub := topic.AddSubscription("rotator", eventgrid.SubscriptionOptions{})
	env = append(env, "EVENTGRID_KEY="+eventgrid.DefaultKey,
		"EVENTGRID_NAMESPACE_ENDPOINT="+endpoint, "EVENTGRID_TOPIC=keys", "EVENTGRID_SUBSCRIPTION=rotator")
	return topic, sub, env
}

// eventGrid starts an Event Grid emulator served over TLS and returns
// it, its base URL, and w's settings with LOG_FORMAT=json and one trust
// file for both emulators.
func (w *world) eventGrid(t *testing.T) (*eventgrid.Server, string, []string) {
	t.Helper()
	eg, err := eventgrid.Start(eventgrid.Options{InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eg.Close() })
	ts := httptest.NewTLSServer(eg.Handler())
	t.Cleanup(ts.Close)

	pemData, err := os.ReadFile(w.emu.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})...)
	certs := filepath.Join(t.TempDir(), "certs.pem")
	if err := os.WriteFile(certs, pemData, 0o600); err != nil {
		t.Fatal(err)
	}

	var env []string
	for _, kv := range w.env(t, w.emu.ClientID()) {
		if !strings.HasPrefix(kv, "SSL_CERT_FILE=") {
			env = append(env, kv)
		}
	}
	return eg, ts.URL, append(env, "SSL_CERT_FILE="+certs, "LOG_FORMAT=json")
}

// TestPullCommand drains a namespace subscription with pull --once.
func TestPullCommand(t *testing.T) {
	w := seed(t)
	topic, sub, env := w.namespace(t)
	ev, _ := json.Marshal(w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.v2, "kv"))
	if err := topic.Publish(ev, json.RawMessage(`{"specversion":"1.0","id":"bad","source":"/x","type":"Microsoft.KeyVault.KeyNewVersionCreated","data":{}}`)); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runBinary(t, env, "pull", "--once", "--json")

	var sum struct{ Received, Acknowledged, Rejected, Released int }
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("got %v\n%s%s", err, out, errOut)
	}
	if code != 1 || sum.Received != 2 || sum.Acknowledged != 1 || sum.Rejected != 1 || sum.Released != 0 {
		t.Errorf("got exit %d, %+v\n%s\nwant 1 (a poison event), one acknowledged and one rejected", code, sum, errOut)
	}
	if got, _ := w.emu.ServerKeyURL(w.ids[0]); got != w.v2.KID {
		t.Errorf("got %s, want %s", got, w.v2.KID)
	}
	if n := len(sub.Events()); n != 0 {
		t.Errorf("got %d events left, want none", n)
	}
}

func TestRecoveryUsage(t *testing.T) {
	tests := [][]string{
		{"pull"},
		{"pull", "--endpoint", "http://x", "--topic", "t", "--subscription", "s"},
		{"pull", "--endpoint", "https://x", "--topic", "t", "--subscription", "s", "--max-events", "500"},
		{"replay", "--since", "48h", "-"},
		{"replay", "--dead-letter", "https://acct.blob.core.windows.net/c", "--since", "last week"},
		{"replay", "--dead-letter", "not a url"},
		{"replay", "--republish", "http://topic", "-"},
		{"reconcile", "extra"},
		{"status", "extra"},
		{"status", "--json", "extra"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := runBinary(t, []string{"ROTATION_TARGETS=" + `{"targets":[{"key":"https://kv.vault.azure.net/keys/k","servers":[]}]}`}, args...)
			if code != 2 || errOut == "" {
				t.Errorf("got exit %d\n%s%s\nwant 2 and the reason", code, out, errOut)
			}
		})
	}
}

// TestReconcileDrift: a mapped server on another key is drift reconcile
// cannot fix, so it exits 1 and names it.
func TestReconcileDrift(t *testing.T) {
	w := seed(t)
	other, err := w.vault.CreateKey("other", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.emu.SetServerKeyURL(w.ids[2], other.KID); err != nil {
		t.Fatal(err)
	}
	env := append(w.env(t, w.emu.ClientID()), "LOG_FORMAT=json")
	for _, args := range [][]string{{"reconcile"}, {"reconcile", "--dry-run"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := runBinary(t, env, args...)
			if code != 1 || !strings.Contains(out, "drift not fixed (1)") || !strings.Contains(out, "relay-3: mismatch") {
				t.Errorf("got exit %d\n%s%s\nwant 1 and relay-3 named as drift", code, out, errOut)
			}
		})
	}
	if got, _ := w.emu.ServerKeyURL(w.ids[2]); got != other.KID {
		t.Errorf("reconcile moved the server on another key to %s", got)
	}
}

// TestPullDryRun: pull --dry-run decides for what is waiting and
// releases every event at once, so nothing is consumed or moved.
func TestPullDryRun(t *testing.T) {
	w := seed(t)
	topic, sub, env := w.namespace(t)
	ev, _ := json.Marshal(w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.v2, "kv"))
	if err := topic.Publish(ev); err != nil {
		t.Fatal(err)
	}

	t.Run("text", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "pull", "--dry-run")
		if code != 0 || !strings.Contains(out, "released all 1 at once without delay (nothing consumed)") ||
			!strings.Contains(out, "would move") {
			t.Errorf("got exit %d\n%s%s\nwant 0, the servers that would move and the event released", code, out, errOut)
		}
	})
	t.Run("json", func(t *testing.T) {
		code, out, errOut := runBinary(t, env, "pull", "--json", "--dry-run")
		var res struct {
			DryRun             bool
			Received, Released int
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
			t.Fatalf("got exit %d, %v\n%s%s", code, err, out, errOut)
		}
		if !res.DryRun || res.Received != 1 || res.Released != 1 {
			t.Errorf("got %+v, want a dry run that received and released the event", res)
		}
	})

	if got, _ := w.emu.ServerKeyURL(w.ids[0]); got != w.v1.KID {
		t.Errorf("dry run moved a server to %s", got)
	}
	evs := sub.Events()
	if len(evs) != 1 || evs[0].State != eventgrid.StateAvailable || evs[0].DeliveryCount != 2 {
		t.Errorf("got %+v, want the event available again at once, received twice", evs)
	}
}
