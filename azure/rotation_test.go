package azure_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

func TestRotate_NewVersionReachesEveryServer(t *testing.T) {
	f := setup(t, 3)
	v2 := f.newVersion(t)
	r := f.rotator(t, nil)
	f.emu.ResetRequests()

	res := r.HandleEvents(t.Context(), []rotation.Event{f.event(t, v2)})

	if len(res) != 1 || res[0].Report == nil {
		t.Fatalf("got results %+v, want one with a report", res)
	}
	rep := *res[0].Report
	var want []rotation.ServerResult
	for _, id := range f.ids {
		want = append(want, rotation.ServerResult{ID: id, Outcome: rotation.Rotated,
			Reason: "rotate from " + f.v1.Version + " to " + v2.Version, PreviousVersion: f.v1.Version, Version: v2.Version})
	}
	if diff := cmp.Diff(want, rep.Servers); diff != "" {
		t.Errorf("servers mismatch (-want +got):\n%s", diff)
	}
	if rep.TargetVersion != v2.Version || !rep.OK() {
		t.Errorf("got target %q, OK %v; want %q, true", rep.TargetVersion, rep.OK(), v2.Version)
	}
	for _, id := range f.ids {
		if got, _ := f.emu.ServerKeyURL(id); got != v2.KID {
			t.Errorf("%s: got key URL %q, want %q", id, got, v2.KID)
		}
		if !f.confirmedAfterPatch(id) {
			t.Errorf("%s: no GET confirmed the PATCH", id)
		}
	}
	for id, n := range f.patchesPerServer() {
		if n != 1 {
			t.Errorf("%s: got %d PATCHes, want 1", id, n)
		}
	}
	if got := len(f.patches()); got != 3 {
		t.Errorf("got %d PATCHes, want 3", got)
	}
	wantBody := `{"properties":{"encryption":{"customerManagedKeyEncryption":{"keyEncryptionKeyUrl":"` + v2.KID + `"}}}}`
	for _, p := range f.patches() {
		if string(p.Body) != wantBody {
			t.Errorf("got PATCH body %s, want %s", p.Body, wantBody)
		}
	}
}

func TestRotate_RepeatedEventsPatchOnce(t *testing.T) {
	f := setup(t, 3)
	v2 := f.newVersion(t)
	r := f.rotator(t, nil)
	e := f.event(t, v2)

	// The same event twice, one after the other.
	first := r.HandleEvents(t.Context(), []rotation.Event{e})
	second := r.HandleEvents(t.Context(), []rotation.Event{e})
	for _, s := range second[0].Report.Servers {
		if s.Outcome != rotation.Current {
			t.Errorf("redelivery: %s got %s, want current", s.ID, s.Outcome)
		}
	}
	if !first[0].Report.OK() {
		t.Errorf("first delivery: got %+v, want OK", first[0].Report)
	}

	// Twenty copies at once, in one batch and in twenty invocations.
	v3 := f.newVersion(t)
	e3 := f.event(t, v3)
	batch := make([]rotation.Event, 20)
	for i := range batch {
		batch[i] = e3
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { r.HandleEvents(t.Context(), batch[:1]) })
	}
	wg.Go(func() { r.HandleEvents(t.Context(), batch) })
	wg.Wait()

	for _, id := range f.ids {
		if got, _ := f.emu.ServerKeyURL(id); got != v3.KID {
			t.Errorf("%s: got key URL %q, want %q", id, got, v3.KID)
		}
	}
	for id, n := range f.patchesPerServer() {
		if n != 2 { // v2 once, v3 once
			t.Errorf("%s: got %d PATCHes, want 2", id, n)
		}
	}
}

func TestRotate_NeverBackwards(t *testing.T) {
	f := setup(t, 2)
	v2, _ := f.vault.RotateKey("cmk")
	v3 := f.newVersion(t)
	r := f.rotator(t, nil)

	for _, v := range []emulator.KeyVersionInfo{v3, v2} {
		res := r.HandleEvents(t.Context(), []rotation.Event{f.event(t, v)})
		if rep := res[0].Report; rep.TargetVersion != v3.Version {
			t.Errorf("event for %s: got target %s, want %s", v.Version, rep.TargetVersion, v3.Version)
		}
	}
	// An event for v2 alone, with the servers already on v3.
	for _, id := range f.ids {
		if got, _ := f.emu.ServerKeyURL(id); got != v3.KID {
			t.Errorf("%s: got key URL %q, want %q", id, got, v3.KID)
		}
	}

	// Key Vault's current version read lags and answers v2 while the
	// servers are on v3: the later of the event's version and the
	// current one is still never older than what a server is on.
	stale := f.rotator(t, func(c *rotation.Config) {
		c.Keys = staleCurrent{Keys: c.Keys, current: f.key.WithVersion(v2.Version)}
	})
	for _, tt := range []struct {
		event   emulator.KeyVersionInfo
		target  string
		outcome rotation.Outcome
		reason  string
	}{
		{v2, v2.Version, rotation.Skipped, rotation.ReasonNewer},
		{v3, v3.Version, rotation.Current, rotation.ReasonCurrent},
	} {
		rep := stale.HandleEvents(t.Context(), []rotation.Event{f.event(t, tt.event)})[0].Report
		if rep.TargetVersion != tt.target {
			t.Errorf("stale current, event for %s: got target %s, want %s", tt.event.Version, rep.TargetVersion, tt.target)
		}
		for _, s := range rep.Servers {
			if s.Outcome != tt.outcome || s.Reason != tt.reason || s.Version != v3.Version {
				t.Errorf("stale current, event for %s: %s got %s %q on %s, want %s %q on %s", tt.event.Version,
					s.ID, s.Outcome, s.Reason, s.Version, tt.outcome, tt.reason, v3.Version)
			}
		}
	}
	for _, p := range f.patches() {
		if url, _ := testenv.KeyURL(p.Body); url != v3.KID {
			t.Errorf("got a PATCH writing %s, want only %s (never older)", url, v3.KID)
		}
	}
	for _, id := range f.ids {
		if got, _ := f.emu.ServerKeyURL(id); got != v3.KID {
			t.Errorf("%s: got key URL %q, want %q", id, got, v3.KID)
		}
	}

	// A manual request for v2 skips servers on the newer v3 unless it
	// explicitly allows older.
	rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version), Manual: true})
	for _, s := range rep.Servers {
		if s.Outcome != rotation.Skipped || s.Reason != rotation.ReasonNewer {
			t.Errorf("manual v2: %s got %s %q, want skipped %q", s.ID, s.Outcome, s.Reason, rotation.ReasonNewer)
		}
	}
	// allowOlder is ignored on events.
	rep = r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version), AllowOlder: true})
	if rep.TargetVersion != v3.Version {
		t.Errorf("event with allowOlder: got target %s, want %s", rep.TargetVersion, v3.Version)
	}
	rep = r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version), Manual: true, AllowOlder: true})
	for _, s := range rep.Servers {
		if s.Outcome != rotation.Rotated || s.Version != v2.Version {
			t.Errorf("manual v2 allowing older: %s got %s on %s, want rotated on %s", s.ID, s.Outcome, s.Version, v2.Version)
		}
	}
}

func TestRotate_InvalidTargetRefused(t *testing.T) {
	tests := []struct {
		name string
		opts emulator.KeyOptions
		says string // the cause, as the report's error names it
		// namesVersion: the error names the version; Key Vault does not
		// say which version is current when it refuses a disabled one.
		namesVersion bool
	}{
		{"EC P-256", emulator.KeyOptions{Type: "EC"}, `key type "EC" cannot wrap keys`, true},
		{"disabled", emulator.KeyOptions{Disabled: true}, "read current version: disabled in Key Vault", false},
		{"expired", emulator.KeyOptions{Expires: time.Now().Add(-time.Hour)}, "expired at", true},
		{"not yet valid", emulator.KeyOptions{NotBefore: time.Now().Add(time.Hour)}, "not valid before", true},
		{"lacks unwrapKey", emulator.KeyOptions{Ops: []string{"encrypt", "decrypt", "wrapKey"}},
			"operation unwrapKey not permitted", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 2)
			v2, err := f.vault.CreateKey("cmk", tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			r := f.rotator(t, nil)

			res := r.HandleEvents(t.Context(), []rotation.Event{f.event(t, v2)})

			rep := res[0].Report
			if rep.Error == "" || rep.Retryable || !rep.Final() {
				t.Errorf("got report error %q retryable %v, want a final error", rep.Error, rep.Retryable)
			}
			if rep.ErrorKind != rotation.KindInvalidTarget {
				t.Errorf("got error kind %q, want %q", rep.ErrorKind, rotation.KindInvalidTarget)
			}
			if !strings.Contains(rep.Error, tt.says) {
				t.Errorf("got error %q, want it to name the cause %q", rep.Error, tt.says)
			}
			if tt.namesVersion && !strings.Contains(rep.Error, v2.Version) {
				t.Errorf("got error %q, want it to name version %s", rep.Error, v2.Version)
			}
			if n := len(f.patches()); n != 0 {
				t.Errorf("got %d PATCHes, want none", n)
			}
		})
	}
}

// An event whose data is oddly spelled (field names in other cases or
// with stray spaces, numbers as strings) is handled exactly as the clean
// one: the same event against an identical emulator gives the same
// results, once the emulator's random parts are named alike.
func TestHandleEvents_OddPayloadSameAsClean(t *testing.T) {
	run := func(t *testing.T, data func(kid, version string) string) []rotation.EventResult {
		t.Helper()
		f := setup(t, 2)
		v2 := f.newVersion(t)
		body := `[{"id":"e1","topic":"t","subject":"cmk","eventType":"Microsoft.KeyVault.KeyNewVersionCreated",` +
			`"eventTime":"2024-01-02T03:04:05Z","data":` + data(v2.KID, v2.Version) + `,"dataVersion":"1","metadataVersion":"1"}]`
		events, err := rotation.DecodeEvents([]byte(body))
		if err != nil {
			t.Fatal(err)
		}

		res := f.rotator(t, nil).HandleEvents(t.Context(), events)

		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		same := strings.NewReplacer(f.v1.Version, "v1", v2.Version, "v2", f.key.Vault, "kv1")
		var out []rotation.EventResult
		if err := json.Unmarshal([]byte(same.Replace(string(b))), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}

	clean := run(t, func(kid, v string) string {
		return `{"Id":"` + kid + `","VaultName":"kv1","ObjectType":"Key","ObjectName":"cmk","Version":"` + v +
			`","NBF":1559081980,"EXP":null}`
	})
	odd := run(t, func(kid, v string) string {
		return `{"Id":"` + kid + `","vaultName":"kv1","objectName ":"cmk","Version":" ` + v +
			`","NBF":"1559081980","EXP":null}`
	})

	if len(clean) != 1 || clean[0].Report == nil || clean[0].Report.TargetVersion != "v2" ||
		clean[0].Key != "https://kv1/keys/cmk" || len(clean[0].Report.Servers) != 2 {
		t.Fatalf("clean event: got %+v, want one result rotating two servers to v2", clean)
	}
	for _, s := range clean[0].Report.Servers {
		if s.Outcome != rotation.Rotated || s.Version != "v2" {
			t.Errorf("clean event: %s got %s on %s, want rotated to v2", s.ID, s.Outcome, s.Version)
		}
	}
	if diff := cmp.Diff(clean, odd); diff != "" {
		t.Errorf("odd event's results differ from the clean one's (-clean +odd):\n%s", diff)
	}
}

// An event whose Id ends in "/keys/cmk/" and names no version rotates
// to the current version, and never writes a versionless URL.
func TestHandleEvents_VersionlessIDResolvesToCurrent(t *testing.T) {
	f := setup(t, 2)
	v2 := f.newVersion(t)
	ge := f.emu.KeyEvent(rotation.TypeKeyNewVersionCreated, v2, "kv1")
	ge.Data.ID, ge.Data.Version = f.key.String()+"/", ""
	b, err := json.Marshal(ge)
	if err != nil {
		t.Fatal(err)
	}
	e, err := rotation.DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Key != f.key {
		t.Fatalf("decoded key %+v, want the versionless %+v", e.Key, f.key)
	}
	r := f.rotator(t, nil)
	f.emu.ResetRequests()

	res := r.HandleEvents(t.Context(), []rotation.Event{e})

	if got := res[0].Report.TargetVersion; got != v2.Version || !res[0].Report.OK() {
		t.Errorf("got target %q, OK %v; want the current version %q, OK", got, res[0].Report.OK(), v2.Version)
	}
	for _, p := range f.patches() {
		url, err := testenv.KeyURL(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		if url != v2.KID {
			t.Errorf("got a PATCH writing %q, want %q", url, v2.KID)
		}
	}
	if n := len(f.patches()); n != 2 {
		t.Errorf("got %d PATCHes, want 2", n)
	}
	for _, id := range f.ids {
		if got, _ := f.emu.ServerKeyURL(id); got != v2.KID {
			t.Errorf("%s: got key URL %q, want %q", id, got, v2.KID)
		}
	}
}

// An event naming a version Key Vault does not have still triggers a
// rotation to the current version, and the report and a warning say so.
func TestHandleEvents_UnknownVersionNamed(t *testing.T) {
	f := setup(t, 2)
	v2 := f.newVersion(t)
	const missing = "0123456789abcdef0123456789abcdef"
	var logs strings.Builder
	r := f.rotator(t, func(c *rotation.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logcheck.Writer(t, &syncWriter{w: &logs}), nil))
	})
	ghost := emulator.KeyVersionInfo{KID: f.key.WithVersion(missing).String(), Name: "cmk", Version: missing}

	res := r.HandleEvents(t.Context(), []rotation.Event{f.event(t, ghost)})

	rep := res[0].Report
	if rep == nil || rep.TargetVersion != v2.Version || !rep.OK() {
		t.Fatalf("got report %+v, want the servers rotated to the current version %s", rep, v2.Version)
	}
	want := []string{"the event's version " + missing + " was not found in Key Vault; the target is the current version " + v2.Version}
	if diff := cmp.Diff(want, rep.Notes); diff != "" {
		t.Errorf("notes mismatch (-want +got):\n%s", diff)
	}
	var warned bool
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "not found in Key Vault") &&
			strings.Contains(line, `"key_version":"`+missing+`"`) && strings.Contains(line, `"target_version":"`+v2.Version+`"`) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("got logs\n%s\nwant a warning naming version %s and the target %s", logs.String(), missing, v2.Version)
	}
	for _, id := range f.ids {
		if got, _ := f.emu.ServerKeyURL(id); got != v2.KID {
			t.Errorf("%s: got key URL %q, want %q", id, got, v2.KID)
		}
	}
}

func TestHandleEvents_UnsubscribedKeysTouchNothing(t *testing.T) {
	f := setup(t, 2)
	other := f.emu.AddVault("kv2")
	o1, err := other.CreateKey("cmk", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := f.vault.CreateKey("cmk-old", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := f.rotator(t, nil)
	f.emu.ResetRequests()

	events := []rotation.Event{f.event(t, o1), f.event(t, old)}
	events[0].Key = mustKey(t, o1.KID)
	res := r.HandleEvents(t.Context(), events)

	for _, er := range res {
		if er.Ignored != rotation.IgnoredNotSubscribed || er.Report != nil {
			t.Errorf("event for %s: got ignored %q report %v, want ignored %q and no report", er.Key, er.Ignored, er.Report, rotation.IgnoredNotSubscribed)
		}
	}
	if reqs := f.emu.Requests(); len(reqs) != 0 {
		t.Errorf("got %d requests (first %s %s %s), want none", len(reqs), reqs[0].Method, reqs[0].Host, reqs[0].Path)
	}
}

func TestRotate_ServersLeftAlone(t *testing.T) {
	f := setup(t, 1)
	versionless, _ := f.emu.PutServer(emulator.ServerSpec{Name: "relay-vl", KeyURL: f.key.String()})
	noCMK, _ := f.emu.PutServer(emulator.ServerSpec{Name: "relay-plain"})
	oldKey, _ := f.vault.CreateKey("cmk-old", emulator.KeyOptions{})
	mismatch, _ := f.emu.PutServer(emulator.ServerSpec{Name: "relay-other", KeyURL: oldKey.KID})
	v2 := f.newVersion(t)
	r := f.rotator(t, func(c *rotation.Config) {
		c.Targets = f.targets(t, f.ids[0], versionless, noCMK, mismatch)
	})

	rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

	want := []rotation.ServerResult{
		{ID: f.ids[0], Outcome: rotation.Rotated, Reason: "rotate from " + f.v1.Version + " to " + v2.Version, PreviousVersion: f.v1.Version, Version: v2.Version},
		{ID: versionless, Outcome: rotation.Skipped, Reason: rotation.ReasonVersionless},
		{ID: noCMK, Outcome: rotation.Skipped, Reason: rotation.ReasonNoCMK},
		{ID: mismatch, Outcome: rotation.Skipped, Reason: "mismatch: uses " + mustKey(t, oldKey.KID).Versionless().String()},
	}
	if diff := cmp.Diff(want, rep.Servers); diff != "" {
		t.Errorf("servers mismatch (-want +got):\n%s", diff)
	}
	if got, _ := f.emu.ServerKeyURL(versionless); got != f.key.String() {
		t.Errorf("versionless server: got key URL %q, want it untouched", got)
	}
	if n := len(f.patches()); n != 1 {
		t.Errorf("got %d PATCHes, want 1", n)
	}
}

func TestRotate_PreviousVersionDisabled(t *testing.T) {
	f := setup(t, 2)
	if err := f.vault.SetEnabled("cmk", f.v1.Version, false); err != nil {
		t.Fatal(err)
	}
	v2 := f.newVersion(t)
	r := f.rotator(t, nil)

	rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

	for _, s := range rep.Servers {
		want := rotation.ServerResult{ID: s.ID, Outcome: rotation.Failed, Reason: "previous version disabled",
			PreviousVersion: f.v1.Version, Version: f.v1.Version}
		if diff := cmp.Diff(want, s); diff != "" {
			t.Errorf("server mismatch (-want +got):\n%s", diff)
		}
	}
	if !rep.Final() {
		t.Error("got a retryable report, want final")
	}
	if n := len(f.patches()); n != 0 {
		t.Errorf("got %d PATCHes, want none", n)
	}
}

func TestRotate_ServerGone(t *testing.T) {
	f := setup(t, 3)
	if err := f.emu.DeleteServer(f.ids[1]); err != nil {
		t.Fatal(err)
	}
	v2 := f.newVersion(t)
	r := f.rotator(t, nil)

	rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

	want := map[string]rotation.Outcome{f.ids[0]: rotation.Rotated, f.ids[1]: rotation.Failed, f.ids[2]: rotation.Rotated}
	if diff := cmp.Diff(want, outcomes(rep)); diff != "" {
		t.Errorf("outcomes mismatch (-want +got):\n%s", diff)
	}
	if s := rep.Servers[1]; s.Retryable || s.Reason != "server not found" {
		t.Errorf("gone server: got reason %q retryable %v, want %q, final", s.Reason, s.Retryable, "server not found")
	}
	if !rep.Final() {
		t.Error("got a retryable report, want final")
	}
}

func TestRotate_DryRun(t *testing.T) {
	for _, where := range []string{"config", "request"} {
		t.Run(where, func(t *testing.T) {
			f := setup(t, 2)
			v2 := f.newVersion(t)
			r := f.rotator(t, func(c *rotation.Config) { c.DryRun = where == "config" })

			rep := r.Rotate(t.Context(), rotation.Request{Key: f.key, DryRun: where == "request"})

			if !rep.DryRun {
				t.Error("report not marked dry run")
			}
			for _, s := range rep.Servers {
				want := rotation.ServerResult{ID: s.ID, Outcome: rotation.Skipped, WouldPatch: true,
					Reason:          "dry run: would rotate from " + f.v1.Version + " to " + v2.Version,
					PreviousVersion: f.v1.Version, Version: v2.Version}
				if diff := cmp.Diff(want, s); diff != "" {
					t.Errorf("server mismatch (-want +got):\n%s", diff)
				}
			}
			if n := len(f.patches()); n != 0 {
				t.Errorf("got %d PATCHes, want none", n)
			}
		})
	}
}

func TestReconcileAndStatus(t *testing.T) {
	f := setup(t, 3)
	v2 := f.newVersion(t)
	r := f.rotator(t, nil)
	r.Reconcile(t.Context())
	// An IaC run puts one server back on v1.
	if err := f.emu.SetServerKeyURL(f.ids[2], f.v1.KID); err != nil {
		t.Fatal(err)
	}

	st := r.Status(t.Context())
	want := rotation.Status{Keys: []rotation.KeyStatus{{
		Key: f.key.String(), CurrentVersion: v2.Version,
		Servers: []rotation.ServerStatus{
			{ID: f.ids[0], Version: v2.Version, State: rotation.StateCurrent},
			{ID: f.ids[1], Version: v2.Version, State: rotation.StateCurrent},
			{ID: f.ids[2], Version: f.v1.Version, State: rotation.StateLagging},
		},
		SafeToDisable: []string{},
	}}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("status mismatch (-want +got):\n%s", diff)
	}

	reports := r.Reconcile(t.Context())
	if len(reports) != 1 || outcomes(reports[0])[f.ids[2]] != rotation.Rotated {
		t.Fatalf("reconcile: got %+v, want server 3 rotated", reports)
	}
	st = r.Status(t.Context())
	if diff := cmp.Diff([]string{f.v1.Version}, st.Keys[0].SafeToDisable); diff != "" {
		t.Errorf("safe to disable mismatch (-want +got):\n%s", diff)
	}
}

// A mapped server that Resource Manager does not know may be a wrong ID
// hiding a server on any version: status then offers none to disable.
func TestStatus_NotFoundServerWithholdsSafeToDisable(t *testing.T) {
	f := setup(t, 2)
	f.newVersion(t)
	r := f.rotator(t, nil)
	if rep := r.Rotate(t.Context(), rotation.Request{Key: f.key}); !rep.OK() {
		t.Fatalf("rotation: %+v", rep)
	}
	if got := r.Status(t.Context()).Keys[0].SafeToDisable; len(got) != 1 || got[0] != f.v1.Version {
		t.Fatalf("before: got safe to disable %v, want [%s]", got, f.v1.Version)
	}
	if err := f.emu.DeleteServer(f.ids[1]); err != nil {
		t.Fatal(err)
	}

	ks := r.Status(t.Context()).Keys[0]

	if got := serverState(t, rotation.Status{Keys: []rotation.KeyStatus{ks}}, f.ids[1]); got.State != rotation.StateNotFound {
		t.Errorf("got state %q, want %q", got.State, rotation.StateNotFound)
	}
	if len(ks.SafeToDisable) != 0 {
		t.Errorf("got safe to disable %v with a mapped server not found, want none", ks.SafeToDisable)
	}
}

func TestKeyVault_Errors(t *testing.T) {
	f := setup(t, 0)
	keys, relays := f.adapters(t, f.emu.HTTPClient())
	ctx := context.Background()

	if _, err := keys.Key(ctx, f.key.WithVersion("0123456789abcdef0123456789abcdef")); !errors.Is(err, rotation.ErrNotFound) {
		t.Errorf("missing version: got %v, want ErrNotFound", err)
	}
	remove := f.emu.InjectFault(emulator.Fault{Service: "keyvault", Status: http.StatusForbidden})
	if _, err := keys.Key(ctx, f.key); !errors.Is(err, rotation.ErrRetryable) {
		t.Errorf("403: got %v, want ErrRetryable (permission propagation)", err)
	}
	remove()
	remove = f.emu.InjectFault(emulator.Fault{Service: "arm", Status: http.StatusBadRequest, Code: "InvalidRequestContent"})
	_, err := relays.SetKeyURL(ctx, emulator.ServerID(emulator.DefaultSubscription, emulator.DefaultResourceGroup, "x"), f.v1.KID)
	if err == nil || errors.Is(err, rotation.ErrRetryable) || errors.Is(err, rotation.ErrNotFound) {
		t.Errorf("400: got %v, want a final error", err)
	}
	remove()
	if _, err := relays.Get(ctx, emulator.ServerID(emulator.DefaultSubscription, emulator.DefaultResourceGroup, "nope")); !errors.Is(err, rotation.ErrNotFound) {
		t.Errorf("missing server: got %v, want ErrNotFound", err)
	}
}

// A 403 stays retryable (a new grant takes minutes to apply), and says
// which permission to check.
func TestPermissionRefusals_NameThePermission(t *testing.T) {
	f := setup(t, 1)
	keys, relays := f.adapters(t, f.emu.HTTPClient())
	f.emu.InjectFault(emulator.Fault{Service: "keyvault", Status: http.StatusForbidden})
	f.emu.InjectFault(emulator.Fault{Service: "arm", Status: http.StatusForbidden})
	const (
		keyRead    = "the identity needs the data action Microsoft.KeyVault/vaults/keys/read on the key"
		serverRead = "the identity needs Microsoft.FluidRelay/fluidRelayServers/read on the server's resource group"
		write      = "the identity needs Microsoft.FluidRelay/fluidRelayServers/write on the server's resource group"
		listRead   = "the identity needs Microsoft.FluidRelay/fluidRelayServers/read on the listed scope"
	)
	ctx := t.Context()
	tests := []struct {
		what string
		call func() error
		says string
	}{
		{"get key", func() error { _, err := keys.Key(ctx, f.key); return err }, keyRead},
		{"list versions", func() error { _, err := keys.Versions(ctx, f.key); return err }, keyRead},
		{"get server", func() error { _, err := relays.Get(ctx, f.ids[0]); return err }, serverRead},
		{"update server", func() error { _, err := relays.SetKeyURL(ctx, f.ids[0], f.v1.KID); return err }, write},
		{"list servers", func() error {
			_, err := relays.List(ctx, "/subscriptions/"+emulator.DefaultSubscription)
			return err
		}, listRead},
	}
	for _, tt := range tests {
		err := tt.call()
		if !errors.Is(err, rotation.ErrRetryable) {
			t.Errorf("%s: got %v, want ErrRetryable (permission propagation)", tt.what, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "403") || !strings.Contains(msg, tt.says) {
			t.Errorf("%s: got %q, want the 403 and %q", tt.what, msg, tt.says)
		}
	}
}

func TestTargets_Discover(t *testing.T) {
	f := setup(t, 2)
	other, _ := f.emu.PutServer(emulator.ServerSpec{ResourceGroup: "rg-other", Name: "relay-elsewhere", KeyURL: f.key.String()})
	oldKey, _ := f.vault.CreateKey("cmk-old", emulator.KeyOptions{})
	_, _ = f.emu.PutServer(emulator.ServerSpec{Name: "relay-old", KeyURL: oldKey.KID})
	_, _ = f.emu.PutServer(emulator.ServerSpec{Name: "relay-plain"})
	_, relays := f.adapters(t, f.emu.HTTPClient())

	got, err := f.targets(t, f.ids[0]).Discover(t.Context(), relays, "/subscriptions/"+emulator.DefaultSubscription)
	if err != nil {
		t.Fatal(err)
	}

	want := []rotation.Target{{Key: f.key, Servers: []string{f.ids[0], f.ids[1], other}}}
	sortServers := cmp.Transformer("sort", func(in []string) []string { out := slices.Clone(in); slices.Sort(out); return out })
	if diff := cmp.Diff(want, got.All(), sortServers); diff != "" {
		t.Errorf("targets mismatch (-want +got):\n%s", diff)
	}
}

func TestFluidRelay_ErrorsStayClassifiableAndShort(t *testing.T) {
	f := setup(t, 1)
	_, relays := f.adapters(t, f.emu.HTTPClient())
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: http.StatusServiceUnavailable})
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, Status: http.StatusNotFound, Times: 1})

	_, err := relays.Get(t.Context(), f.ids[0])
	if re, ok := errors.AsType[*azcore.ResponseError](err); !ok || re.StatusCode != http.StatusNotFound || !errors.Is(err, rotation.ErrNotFound) {
		t.Errorf("got %v, want a 404 *azcore.ResponseError and ErrNotFound", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("got a multi-line error %q, want one line", err)
	}

	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, relays := f.adapters(t, transporter(f))
		_, err := relays.SetKeyURL(ctx, f.ids[0], f.v1.KID)
		if !errors.Is(err, rotation.ErrRetryable) {
			t.Errorf("503 after retries: got %v, want ErrRetryable", err)
		}
	})
}

// TestStatusAndRotate_NameWhatAPersonMustSettle: a mapped server on
// another key, or without a customer-managed key, is never moved; status
// says what to do about it and a rotation warns instead of passing it by.
func TestStatusAndRotate_NameWhatAPersonMustSettle(t *testing.T) {
	f := setup(t, 2)
	other, err := f.vault.CreateKey("cmk-old", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.emu.SetServerKeyURL(f.ids[1], other.KID); err != nil {
		t.Fatal(err)
	}
	plain, err := f.emu.PutServer(emulator.ServerSpec{Name: "relay-plain"})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	r := f.rotator(t, func(c *rotation.Config) {
		c.Targets = f.targets(t, f.ids[0], f.ids[1], plain)
		c.Logger = slog.New(slog.NewTextHandler(logcheck.Writer(t, &syncWriter{w: &logs}), nil))
	})

	st := r.Status(t.Context())
	for _, tt := range []struct{ id, state, says string }{
		{f.ids[1], rotation.StateMismatch, "uses " + mustKey(t, other.KID).Versionless().String() + ", not the mapped key"},
		{plain, rotation.StateNoCMK, "no customer-managed key"},
	} {
		got := serverState(t, st, tt.id)
		if got.State != tt.state || !strings.Contains(got.Error, tt.says) || got.Retryable {
			t.Errorf("%s: got %+v, want state %s, final, with an error saying %q", tt.id, got, tt.state, tt.says)
		}
	}

	f.newVersion(t)
	r.Reconcile(t.Context())
	if n := len(f.patches()); n != 1 {
		t.Errorf("got %d PATCHes, want 1 (only the server on the mapped key)", n)
	}
	if got := strings.Count(logs.String(), `level=WARN msg="server left alone"`); got != 2 {
		t.Errorf("got %d warnings, want one per server a person must settle:\n%s", got, logs.String())
	}
}

// syncWriter serialises writes from concurrent rotations.
type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// staleCurrent answers an older version as the key's current one, as a
// Key Vault replica that has not yet seen the newest version would.
type staleCurrent struct {
	rotation.Keys
	current rotation.KeyRef
}

func (k staleCurrent) Key(ctx context.Context, ref rotation.KeyRef) (rotation.KeyVersion, error) {
	if ref.Version == "" {
		ref = k.current
	}
	return k.Keys.Key(ctx, ref)
}
