package azure_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/azurite"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// deadLetterWorld is the emulator with key cmk (v1, then v2 and v3) on
// relay-1 and relay-2, key other (o1, then o2) on relay-3, and an
// Azurite container "deadletters" written as Event Grid writes it.
type deadLetterWorld struct {
	*fixture
	v2, v3     emulator.KeyVersionInfo
	o1, o2     emulator.KeyVersionInfo
	targets    rotation.Targets
	az         *azurite.Azurite
	container  *container.Client
	blobWrites *writeCounter
}

func newDeadLetterWorld(t *testing.T) *deadLetterWorld {
	t.Helper()
	return newWorld(t, true)
}

// newWorld builds the world, with Azurite only when blobs is set.
func newWorld(t *testing.T, blobs bool) *deadLetterWorld {
	t.Helper()
	w := &deadLetterWorld{fixture: setup(t, 2)}
	var err error
	if w.v2, err = w.vault.RotateKey("cmk"); err != nil {
		t.Fatal(err)
	}
	if w.v3, err = w.vault.RotateKey("cmk"); err != nil {
		t.Fatal(err)
	}
	if w.o1, err = w.vault.CreateKey("other", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if w.o2, err = w.vault.RotateKey("other"); err != nil {
		t.Fatal(err)
	}
	id, err := w.emu.PutServer(emulator.ServerSpec{Name: "relay-3", KeyURL: w.o1.KID})
	if err != nil {
		t.Fatal(err)
	}
	w.ids = append(w.ids, id)
	doc, _ := json.Marshal(map[string]any{"targets": []any{
		map[string]any{"key": w.key.String(), "servers": w.ids[:2]},
		map[string]any{"key": mustKey(t, w.o1.KID).Versionless().String(), "servers": w.ids[2:]},
	}})
	if w.targets, err = rotation.ParseTargets(doc); err != nil {
		t.Fatal(err)
	}

	if !blobs {
		return w
	}
	w.az = azurite.Start(t)
	w.blobWrites = &writeCounter{next: http.DefaultClient}
	w.container, err = container.NewClientFromConnectionString(w.az.ConnectionString(), "deadletters", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.container.Create(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	return w
}

// writeCounter passes requests on and counts those that write.
type writeCounter struct {
	next policy.Transporter
	mu   sync.Mutex
	n    int
}

func (c *writeCounter) Do(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
	return c.next.Do(req)
}

func (c *writeCounter) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// store opens the container through the adapter, counting its writes.
func (w *deadLetterWorld) store(t *testing.T, location string) *azure.DeadLetters {
	t.Helper()
	d, err := azure.NewDeadLettersFromConnectionString(w.az.ConnectionString(), location,
		&azure.DeadLetterOptions{ClientOptions: azcore.ClientOptions{Transport: w.blobWrites}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// deadLettered returns the event as Event Grid dead-letters it, with
// the delivery metadata of its schema.
func deadLettered(t *testing.T, ev any, cloud bool) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	meta := map[string]any{"deadLetterReason": "MaxDeliveryAttemptsExceeded", "deliveryAttempts": 30,
		"lastDeliveryOutcome": "NotFound", "publishTime": "2024-05-01T07:10:00.1234567Z",
		"lastDeliveryAttemptTime": "2024-05-01T08:10:00.1234567Z"}
	for k, v := range meta {
		if cloud {
			k = strings.ToLower(k)
		}
		m[k] = v
	}
	out, _ := json.Marshal(m)
	return out
}

func (w *deadLetterWorld) gridEvent(t *testing.T, v emulator.KeyVersionInfo) json.RawMessage {
	return deadLettered(t, w.emu.KeyEvent(emulator.KeyNewVersionCreated, v, "kv1"), false)
}

func (w *deadLetterWorld) cloudEvent(t *testing.T, v emulator.KeyVersionInfo) json.RawMessage {
	return deadLettered(t, w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, v, "kv1"), true)
}

func (w *deadLetterWorld) upload(t *testing.T, name string, events ...json.RawMessage) {
	t.Helper()
	body, _ := json.Marshal(events)
	if _, err := w.container.NewBlockBlobClient(name).UploadBuffer(t.Context(), body, nil); err != nil {
		t.Fatal(err)
	}
}

func (w *deadLetterWorld) uploadRaw(t *testing.T, name, body string) {
	t.Helper()
	if _, err := w.container.NewBlockBlobClient(name).UploadBuffer(t.Context(), []byte(body), nil); err != nil {
		t.Fatal(err)
	}
}

// metadata lists the container's blobs with their metadata.
func (w *deadLetterWorld) outcomes(t *testing.T, d *azure.DeadLetters) map[string]string {
	t.Helper()
	blobs, err := d.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range blobs {
		out[b.Name] = b.Meta(azure.MetaOutcome)
		if !b.Replayed.IsZero() && b.Meta(azure.MetaOutcome) == "" {
			t.Errorf("%s: marked replayed without an outcome", b.Name)
		}
	}
	return out
}

func (w *deadLetterWorld) rotator(t *testing.T, dryRun bool) *rotation.Rotator {
	return w.fixture.rotator(t, func(c *rotation.Config) { c.Targets, c.DryRun = w.targets, dryRun })
}

// TestReplayDeadLetters replays real-shaped dead-letter blobs from
// Azurite: both schemas, duplicates, an older version in the same batch
// as a newer one (TestReplayDeadLetters_OlderVersionLater has it in a
// later one), an undecodable event, and a blob whose rotation fails in a way a later
// run can fix. Then it replays again until nothing is left.
func TestReplayDeadLetters(t *testing.T) {
	w := newDeadLetterWorld(t)
	const (
		newest   = "RELAY-SUB/2024/5/1/7/11111111-1111-1111-1111-111111111111.json"
		older    = "RELAY-SUB/2024/5/1/12/22222222-2222-2222-2222-222222222222.json"
		poison   = "RELAY-SUB/2024/5/1/13/33333333-3333-3333-3333-333333333333.json"
		throttle = "RELAY-SUB/2024/5/2/0/44444444-4444-4444-4444-444444444444.json"
	)
	dup := w.gridEvent(t, w.v3) // delivered, failed and dead-lettered twice
	w.upload(t, newest, dup, w.cloudEvent(t, w.v3), dup)
	w.upload(t, older, w.cloudEvent(t, w.v2), w.gridEvent(t, w.v2))
	w.upload(t, poison, json.RawMessage(`{"id":"x","eventType":"`+rotation.TypeKeyNewVersionCreated+
		`","data":{"Id":"not a key URL"}}`), w.gridEvent(t, w.v3))
	w.upload(t, throttle, w.gridEvent(t, w.o2))
	remove := w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, PathSuffix: "/relay-3",
		Status: http.StatusTooManyRequests, RetryAfter: 2 * time.Minute})

	d := w.store(t, "deadletters/RELAY-SUB")
	r := w.rotator(t, false)

	t.Run("first run", func(t *testing.T) {
		sum, err := d.Replay(t.Context(), r, azure.ReplayOptions{Logger: logcheck.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Blobs != 4 || sum.Replayed != 3 || sum.Unfinished != 1 || sum.Events != 7 || sum.Poison != 1 {
			t.Errorf("got %d blobs, %d replayed, %d unfinished, %d events, %d poison; want 4, 3, 1, 7, 1",
				sum.Blobs, sum.Replayed, sum.Unfinished, sum.Events, sum.Poison)
		}
		want := map[string]string{newest: azure.OutcomeOK, older: azure.OutcomeOK,
			poison: azure.OutcomeUndecodable, throttle: ""}
		if diff := cmp.Diff(want, w.outcomes(t, d)); diff != "" {
			t.Errorf("blob outcomes (-want +got):\n%s", diff)
		}
		for _, id := range w.ids[:2] {
			if got, _ := w.emu.ServerKeyURL(id); got != w.v3.KID {
				t.Errorf("%s: got %s, want the newest version %s", id, got, w.v3.KID)
			}
		}
		for id, n := range w.patchesPerServer() {
			if n != 1 {
				t.Errorf("%s: got %d PATCHes, want 1: the events of one key share a rotation", id, n)
			}
		}
		if got, _ := w.emu.ServerKeyURL(w.ids[2]); got != w.o1.KID {
			t.Errorf("throttled server: got %s, want it still on %s", got, w.o1.KID)
		}
	})

	t.Run("second run finishes the rest", func(t *testing.T) {
		remove()
		w.emu.ResetRequests()
		before := w.blobWrites.writes()

		sum, err := d.Replay(t.Context(), r, azure.ReplayOptions{Logger: logcheck.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Done != 3 || sum.Replayed != 1 || sum.Unfinished != 0 {
			t.Errorf("got %d done, %d replayed, %d unfinished; want 3, 1, 0", sum.Done, sum.Replayed, sum.Unfinished)
		}
		if got, _ := w.emu.ServerKeyURL(w.ids[2]); got != w.o2.KID {
			t.Errorf("got %s, want %s", got, w.o2.KID)
		}
		if n := len(w.patches()); n != 1 {
			t.Errorf("got %d PATCHes, want 1 (the throttled server only)", n)
		}
		if n := w.blobWrites.writes() - before; n != 1 {
			t.Errorf("got %d blob writes, want 1 (the unfinished blob's mark)", n)
		}
	})

	t.Run("third run writes nothing", func(t *testing.T) {
		w.emu.ResetRequests()
		before := w.blobWrites.writes()

		sum, err := d.Replay(t.Context(), r, azure.ReplayOptions{Logger: logcheck.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Done != 4 || sum.Replayed != 0 || len(w.emu.Requests()) != 0 {
			t.Errorf("got %d done, %d replayed, %d requests to Azure; want 4, 0, 0",
				sum.Done, sum.Replayed, len(w.emu.Requests()))
		}
		if n := w.blobWrites.writes() - before; n != 0 {
			t.Errorf("got %d blob writes, want none", n)
		}
	})
}

func TestReplayDeadLetters_DryRunChangesNothing(t *testing.T) {
	w := newDeadLetterWorld(t)
	w.upload(t, "RELAY-SUB/2024/5/1/7/a.json", w.gridEvent(t, w.v3), w.cloudEvent(t, w.o2))
	d := w.store(t, w.az.BlobEndpoint()+"/deadletters")
	w.emu.ResetRequests()
	before := w.blobWrites.writes()

	sum, err := d.Replay(t.Context(), w.rotator(t, true), azure.ReplayOptions{DryRun: true, Logger: logcheck.Logger(t)})

	if err != nil {
		t.Fatal(err)
	}
	if sum.Replayed != 1 || sum.Results[0].Marked {
		t.Errorf("got %d replayed, marked %v; want 1 judged done and not marked", sum.Replayed, sum.Results[0].Marked)
	}
	for _, ev := range sum.Results[0].Events {
		for _, s := range ev.Report.Servers {
			if !s.WouldPatch {
				t.Errorf("%s: got %s (%s), want a PATCH that would be sent", s.ID, s.Outcome, s.Reason)
			}
		}
	}
	if n := len(w.patches()); n != 0 {
		t.Errorf("got %d PATCHes, want none", n)
	}
	if n := w.blobWrites.writes() - before; n != 0 {
		t.Errorf("got %d blob writes, want none", n)
	}
}

func TestReplayDeadLetters_Since(t *testing.T) {
	w := newDeadLetterWorld(t)
	w.upload(t, "RELAY-SUB/2024/5/1/7/a.json", w.gridEvent(t, w.v2))
	w.upload(t, "RELAY-SUB/2024/5/1/9/b.json", w.gridEvent(t, w.v3))
	w.upload(t, "RELAY-SUB/2024/12/31/23/c.json", w.gridEvent(t, w.v3))
	w.uploadRaw(t, "saved-by-hand.json", "[]") // no path date: last modified, just now
	d := w.store(t, "deadletters")

	since := time.Date(2024, 5, 1, 8, 30, 0, 0, time.UTC)
	sum, err := d.Replay(t.Context(), w.rotator(t, false), azure.ReplayOptions{Since: since, Logger: logcheck.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range sum.Results {
		names = append(names, r.Name)
	}
	want := []string{"RELAY-SUB/2024/12/31/23/c.json", "RELAY-SUB/2024/5/1/9/b.json", "saved-by-hand.json"}
	if diff := cmp.Diff(want, names); diff != "" || sum.TooOld != 1 {
		t.Errorf("got %d too old; replayed blobs (-want +got):\n%s", sum.TooOld, diff)
	}
}

func TestDeadLetters_List(t *testing.T) {
	w := newDeadLetterWorld(t)
	w.uploadRaw(t, "SUB-A/2019/8/8/5/111111111-1111-1111-1111-111111111111.json", "[]")
	w.uploadRaw(t, "SUB-A/2019/2/30/5/x.json", "[]") // no such day
	w.uploadRaw(t, "SUB-B/2020/12/31/23/y.json", "[]")
	d := w.store(t, "deadletters/SUB-")

	blobs, err := d.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name, Sub string
		Hour      time.Time
	}
	var got []row
	for _, b := range blobs {
		got = append(got, row{b.Name, b.Subscription, b.Hour})
	}
	want := []row{
		{"SUB-A/2019/2/30/5/x.json", "", time.Time{}},
		{"SUB-A/2019/8/8/5/111111111-1111-1111-1111-111111111111.json", "SUB-A", time.Date(2019, 8, 8, 5, 0, 0, 0, time.UTC)},
		{"SUB-B/2020/12/31/23/y.json", "SUB-B", time.Date(2020, 12, 31, 23, 0, 0, 0, time.UTC)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
}

func TestDeadLetters_MarkRefusesAChangedBlob(t *testing.T) {
	w := newDeadLetterWorld(t)
	w.uploadRaw(t, "SUB/2024/1/1/0/a.json", "[]")
	d := w.store(t, "deadletters")
	blobs, err := d.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w.uploadRaw(t, "SUB/2024/1/1/0/a.json", "[ ]") // rewritten after listing

	err = d.MarkDone(t.Context(), blobs[0], azure.Mark{Time: time.Now(), Outcome: azure.OutcomeOK})

	if !errors.Is(err, azure.ErrBlobChanged) {
		t.Errorf("got %v, want ErrBlobChanged", err)
	}
}

func TestNewDeadLetters_BadLocation(t *testing.T) {
	for _, loc := range []string{"", "deadletters", "ftp://acct/c", "https://acct.blob.core.windows.net/"} {
		t.Run(loc, func(t *testing.T) {
			if _, err := azure.NewDeadLetters(loc, nil, nil); err == nil {
				t.Errorf("got no error for %q", loc)
			}
		})
	}
	const ipStyle = "for an IP host the URL names the account first: http://127.0.0.1:10000/{account}/{container}"
	for _, loc := range []string{"https://127.0.0.1:1/dl", "http://[::1]:10000/devstoreaccount1"} {
		t.Run(loc, func(t *testing.T) {
			_, err := azure.NewDeadLetters(loc, staticToken{}, nil)
			if err == nil || !strings.Contains(err.Error(), ipStyle) {
				t.Errorf("got %v, want it to say %q", err, ipStyle)
			}
			_, err = azure.NewDeadLettersFromConnectionString("UseDevelopmentStorage=true", loc, nil)
			if err == nil || !strings.Contains(err.Error(), ipStyle) {
				t.Errorf("with a connection string: got %v, want it to say %q", err, ipStyle)
			}
		})
	}
	if _, err := azure.NewDeadLetters("https://127.0.0.1:1/devstoreaccount1/dl", staticToken{}, nil); err != nil {
		t.Errorf("got %v, want an IP host with account and container accepted", err)
	}
	_, err := azure.NewDeadLettersFromConnectionString("AccountKey=secret-value;garbage", "c", nil)
	if err == nil || bytes.Contains([]byte(err.Error()), []byte("secret-value")) {
		t.Errorf("got %v, want an error that does not repeat the connection string", err)
	}
}

// refuseMarks answers 403 to every metadata write and passes the rest on.
type refuseMarks struct{ next policy.Transporter }

func (r refuseMarks) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && req.URL.Query().Get("comp") == "metadata" {
		return &http.Response{StatusCode: http.StatusForbidden, Status: "403 Forbidden", Request: req,
			Header: http.Header{"X-Ms-Error-Code": {"AuthorizationPermissionMismatch"}},
			Body:   io.NopCloser(strings.NewReader(""))}, nil
	}
	return r.next.Do(req)
}

// TestReplayDeadLetters_FailuresAreReturnedNotLogged: a blob that cannot
// be marked is reported through the error and its result, and is not
// logged as well.
func TestReplayDeadLetters_FailuresAreReturnedNotLogged(t *testing.T) {
	w := newDeadLetterWorld(t)
	const name = "RELAY-SUB/2024/5/1/7/11111111-1111-1111-1111-111111111111.json"
	w.upload(t, name, w.gridEvent(t, w.v3))
	d, err := azure.NewDeadLettersFromConnectionString(w.az.ConnectionString(), "deadletters",
		&azure.DeadLetterOptions{ClientOptions: azcore.ClientOptions{Transport: refuseMarks{http.DefaultClient}}})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer

	sum, err := d.Replay(t.Context(), w.rotator(t, false), azure.ReplayOptions{
		Logger: slog.New(slog.NewTextHandler(logcheck.Writer(t, &logs), nil))})

	if err == nil || !strings.Contains(err.Error(), "mark dead-letter blob "+name) {
		t.Errorf("got %v, want the marking failure", err)
	}
	if len(sum.Results) != 1 || sum.Results[0].Error == "" || sum.Results[0].Marked {
		t.Errorf("got results %+v, want one unmarked blob with its error", sum.Results)
	}
	if strings.Contains(logs.String(), "level=ERROR") || strings.Contains(logs.String(), "403") {
		t.Errorf("got logs\n%s\nwant the returned failure not logged", logs.String())
	}
}

// staticToken is a credential that always has the same token.
type staticToken struct{}

func (staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// TestDeadLetters_NeverPrintsTheSignature: a container URL with a SAS
// query and user info is opened, listed and replayed, and refused when
// malformed; the signature and the password appear in no error, name
// or log.
func TestDeadLetters_NeverPrintsTheSignature(t *testing.T) {
	const query = "?sv=2024-11-04&sp=rl&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
	logcheck.Secret(t, "c2VjcmV0LXNpZ25hdHVyZQ")
	secret := func(t *testing.T, what, s string) {
		t.Helper()
		if strings.Contains(s, "sig=") || strings.Contains(s, "c2VjcmV0") || strings.Contains(s, "hunter2") {
			t.Errorf("%s leaks the signature or password: %s", what, s)
		}
	}

	t.Run("malformed", func(t *testing.T) {
		for _, loc := range []string{"ftp://acct/c" + query, "https://acct.blob.core.windows.net/" + query,
			"https://me:hunter2@acct.blob.core.windows.net/" + query, "https://%zz/c" + query} {
			_, err := azure.NewDeadLetters(loc, staticToken{}, nil)
			if err == nil {
				t.Errorf("%s: got no error", loc)
				continue
			}
			secret(t, "error", err.Error())
		}
	})

	w := newDeadLetterWorld(t)
	w.upload(t, "SUB/2024/5/1/7/a.json", w.gridEvent(t, w.v3))
	endpoint := w.az.BlobEndpoint()
	withUser := strings.Replace(endpoint, "://", "://me:hunter2@", 1)
	tests := []struct {
		name string
		open func(location string) (*azure.DeadLetters, error)
	}{
		{"connection string", func(loc string) (*azure.DeadLetters, error) {
			return azure.NewDeadLettersFromConnectionString(w.az.ConnectionString(), loc, nil)
		}},
		{"credential", func(loc string) (*azure.DeadLetters, error) {
			return azure.NewDeadLetters(loc, staticToken{}, nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct{ loc, want string }{
				{endpoint + "/deadletters/SUB" + query, endpoint + "/deadletters/SUB"},
				{withUser + "/missing" + query, endpoint + "/missing"},
			} {
				d, err := tt.open(c.loc)
				if err != nil {
					secret(t, "error", err.Error())
					continue
				}
				if got := d.String(); got != c.want {
					t.Errorf("got %s, want %s", got, c.want)
				}
				var logs bytes.Buffer
				sum, err := d.Replay(t.Context(), w.rotator(t, true), azure.ReplayOptions{DryRun: true,
					Logger: slog.New(slog.NewTextHandler(logcheck.Writer(t, &logs), &slog.HandlerOptions{Level: slog.LevelDebug}))})
				if err != nil {
					secret(t, "error", err.Error())
				}
				secret(t, "logs", logs.String())
				secret(t, "results", fmt.Sprint(sum.Results))
			}
		})
	}
}

// TestReplayDeadLetters_OlderVersionLater: an event for an older version
// arrives after the newer one was replayed and marked, in a later run or
// in a later batch of the same run. It PATCHes nothing, ends final and
// its blob is marked.
func TestReplayDeadLetters_OlderVersionLater(t *testing.T) {
	// Event Grid's paths are not zero-padded: hour 10 sorts before hour 9.
	const (
		newer = "RELAY-SUB/2024/5/1/10/11111111-1111-1111-1111-111111111111.json"
		older = "RELAY-SUB/2024/5/1/9/22222222-2222-2222-2222-222222222222.json"
	)
	if newer >= older {
		t.Fatalf("%s sorts after %s; want the older version's blob listed later", newer, older)
	}
	// check replays the blob of the older version and wants it final,
	// PATCHing nothing, and marked.
	check := func(t *testing.T, w *deadLetterWorld, res azure.BlobResult) {
		t.Helper()
		if res.Name != older || !res.Marked || res.Outcome != azure.OutcomeOK {
			t.Errorf("got %s outcome %q, marked %v; want %s ok and marked", res.Name, res.Outcome, res.Marked, older)
		}
		for _, ev := range res.Events {
			if ev.Report == nil {
				t.Errorf("event %s: got no report (%s), want one", ev.EventID, ev.Ignored)
				continue
			}
			for _, s := range ev.Report.Servers {
				if s.Outcome != rotation.Skipped && s.Outcome != rotation.Current {
					t.Errorf("%s: got %s (%s), want skipped or current: never moved back", s.ID, s.Outcome, s.Reason)
				}
			}
		}
		for _, id := range w.ids[:2] {
			if got, _ := w.emu.ServerKeyURL(id); got != w.v3.KID {
				t.Errorf("%s: got %s, want it still on %s", id, got, w.v3.KID)
			}
		}
	}

	t.Run("a later run", func(t *testing.T) {
		w := newDeadLetterWorld(t)
		d := w.store(t, "deadletters/RELAY-SUB")
		r := w.rotator(t, false)
		w.upload(t, newer, w.gridEvent(t, w.v3))
		sum, err := d.Replay(t.Context(), r, azure.ReplayOptions{Logger: logcheck.Logger(t)})
		if err != nil || sum.Replayed != 1 || !sum.Results[0].Marked {
			t.Fatalf("first run: got %d replayed, %v; want the newer blob replayed and marked", sum.Replayed, err)
		}

		w.upload(t, older, w.gridEvent(t, w.v2), w.cloudEvent(t, w.v2))
		w.emu.ResetRequests()
		sum, err = d.Replay(t.Context(), r, azure.ReplayOptions{Logger: logcheck.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Done != 1 || sum.Replayed != 1 || len(sum.Results) != 1 {
			t.Fatalf("second run: got %d done, %d replayed, results %+v; want 1, 1 and the older blob", sum.Done, sum.Replayed, sum.Results)
		}
		check(t, w, sum.Results[0])
		if n := len(w.patches()); n != 0 {
			t.Errorf("got %d PATCHes, want none", n)
		}
	})

	t.Run("a later batch", func(t *testing.T) {
		w := newDeadLetterWorld(t)
		d := w.store(t, "deadletters/RELAY-SUB")
		w.upload(t, newer, w.gridEvent(t, w.v3))
		w.upload(t, older, w.gridEvent(t, w.v2), w.cloudEvent(t, w.v2))
		var batches []int
		sum, err := d.Replay(t.Context(), w.rotator(t, false), azure.ReplayOptions{Batch: 1,
			Progress: func(s azure.ReplaySummary) { batches = append(batches, len(s.Results)) },
			Logger:   logcheck.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if len(sum.Results) != 2 || sum.Results[0].Name != newer || !slices.Equal(batches, []int{1, 2}) {
			t.Fatalf("got results %+v in batches %v; want %s, then %s in a batch of its own", sum.Results, batches, newer, older)
		}
		check(t, w, sum.Results[1])
		if n := len(w.patches()); n != 2 {
			t.Errorf("got %d PATCHes, want 2: the newer version's, one per server", n)
		}
	})
}

// TestDeadLetters_MarkKeepsMetadataNames: marking a blob keeps the
// metadata an operator set on it, names spelled as they were.
func TestDeadLetters_MarkKeepsMetadataNames(t *testing.T) {
	w := newDeadLetterWorld(t)
	const name = "RELAY-SUB/2024/5/1/7/a.json"
	body, _ := json.Marshal([]json.RawMessage{w.gridEvent(t, w.v3)})
	owner, ticket := "ops-team", "Change 42"
	if _, err := w.container.NewBlockBlobClient(name).UploadBuffer(t.Context(), body, &blockblob.UploadBufferOptions{
		Metadata: map[string]*string{"Owner": &owner, "TicketRef": &ticket}}); err != nil {
		t.Fatal(err)
	}
	d := w.store(t, "deadletters")
	blobs, err := d.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := blobs[0].Meta("owner"); got != owner {
		t.Errorf("Meta(owner): got %q, want %q whatever the case", got, owner)
	}

	sum, err := d.Replay(t.Context(), w.rotator(t, false), azure.ReplayOptions{Logger: logcheck.Logger(t)})
	if err != nil || !sum.Results[0].Marked {
		t.Fatalf("got %+v, %v; want the blob marked", sum.Results, err)
	}

	// The SDK reads listed names in lower case; the listing's XML has
	// them as stored.
	var resp *http.Response
	if _, err := w.container.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Include: container.ListBlobsInclude{Metadata: true}}).NextPage(policy.WithCaptureResponse(t.Context(), &resp)); err != nil {
		t.Fatal(err)
	}
	listing, err := runtime.Payload(resp)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Metadata struct {
			Items []struct {
				XMLName xml.Name
				Value   string `xml:",chardata"`
			} `xml:",any"`
		} `xml:"Blobs>Blob>Metadata"`
	}
	if err := xml.Unmarshal(listing, &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, it := range list.Metadata.Items {
		if !strings.HasPrefix(it.XMLName.Local, "cmkrotator_") {
			got[it.XMLName.Local] = it.Value
		}
	}
	if diff := cmp.Diff(map[string]string{"Owner": owner, "TicketRef": ticket}, got); diff != "" {
		t.Errorf("operator metadata after marking (-want +got):\n%s", diff)
	}
}
