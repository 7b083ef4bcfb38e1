package azure_test

import (
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// These tests run the rotation against behaviours of the real services
// that an easier emulation would hide: Key Vault refusing to describe a
// disabled version, Resource Manager reporting an update that has not
// settled, and Key Vault naming a host other than the one it was reached
// by.

// keyVaultRefusals counts Key Vault's 403 answers to GETs of version
// (any version when version is "").
func (f *fixture) keyVaultRefusals(version string) int {
	n := 0
	for _, r := range f.emu.Requests() {
		if r.Service == "keyvault" && r.Method == http.MethodGet && r.Status == http.StatusForbidden &&
			(version == "" || strings.HasSuffix(r.Path, "/"+version)) {
			n++
		}
	}
	return n
}

// serverState returns the state Status reports for server id.
func serverState(t *testing.T, st rotation.Status, id string) rotation.ServerStatus {
	t.Helper()
	for _, k := range st.Keys {
		for _, s := range k.Servers {
			if s.ID == id {
				return s
			}
		}
	}
	t.Fatalf("status %+v does not name server %s", st, id)
	return rotation.ServerStatus{}
}

func TestRotate_DisabledTargetIsInvalid(t *testing.T) {
	tests := []struct {
		name string
		// request builds the request; v2 is the disabled version, v3 (when
		// made) a newer enabled one.
		request func(f *fixture, v2 emulator.KeyVersionInfo) rotation.Request
		newer   bool // create an enabled v3 after v2
	}{
		{"manual to a disabled current version", func(f *fixture, v2 emulator.KeyVersionInfo) rotation.Request {
			return rotation.Request{Key: f.key.WithVersion(v2.Version), Manual: true}
		}, false},
		{"manual to a disabled older version", func(f *fixture, v2 emulator.KeyVersionInfo) rotation.Request {
			return rotation.Request{Key: f.key.WithVersion(v2.Version), Manual: true, AllowOlder: true}
		}, true},
		{"event while the current version is disabled", func(f *fixture, v2 emulator.KeyVersionInfo) rotation.Request {
			return rotation.Request{Key: f.key.WithVersion(v2.Version)}
		}, false},
		{"versionless while the current version is disabled", func(f *fixture, v2 emulator.KeyVersionInfo) rotation.Request {
			return rotation.Request{Key: f.key, Manual: true}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 2)
			v2 := f.newVersion(t)
			if tt.newer {
				f.newVersion(t)
			}
			if err := f.vault.SetEnabled("cmk", v2.Version, false); err != nil {
				t.Fatal(err)
			}
			r := f.rotator(t, nil)
			f.emu.ResetRequests()

			rep := r.Rotate(t.Context(), tt.request(f, v2))

			if rep.Error == "" || rep.ErrorKind != rotation.KindInvalidTarget || rep.Retryable {
				t.Errorf("got error %q kind %q retryable %v, want a final %s error", rep.Error, rep.ErrorKind, rep.Retryable, rotation.KindInvalidTarget)
			}
			// Key Vault's 403 is about the version; the error must not
			// read like a missing permission.
			if !strings.Contains(rep.Error, "disabled in Key Vault") || strings.Contains(rep.Error, "Forbidden") {
				t.Errorf("got error %q, want it to say the version is disabled, not forbidden", rep.Error)
			}
			if len(rep.Servers) != 0 {
				t.Errorf("got servers %+v, want none", rep.Servers)
			}
			if n := f.keyVaultRefusals(""); n == 0 {
				t.Error("Key Vault refused nothing, want its 403 for the disabled version")
			}
			if n := len(f.patches()); n != 0 {
				t.Errorf("got %d PATCHes, want none", n)
			}
			for _, id := range f.ids {
				if got, _ := f.emu.ServerKeyURL(id); got != f.v1.KID {
					t.Errorf("%s: got key URL %q, want it left on %q", id, got, f.v1.KID)
				}
			}
		})
	}
}

func TestRotate_PinnedToDisabledVersion(t *testing.T) {
	f := setup(t, 2)
	if err := f.vault.SetEnabled("cmk", f.v1.Version, false); err != nil {
		t.Fatal(err)
	}
	v2 := f.newVersion(t)
	r := f.rotator(t, nil)
	f.emu.ResetRequests()

	res := r.HandleEvents(t.Context(), []rotation.Event{f.event(t, v2)})

	rep := res[0].Report
	if rep == nil || rep.Error != "" || rep.TargetVersion != v2.Version {
		t.Fatalf("got report %+v, want one targeting %s", rep, v2.Version)
	}
	var want []rotation.ServerResult
	for _, id := range f.ids {
		want = append(want, rotation.ServerResult{ID: id, Outcome: rotation.Failed, Reason: rotation.ReasonPreviousOff,
			PreviousVersion: f.v1.Version, Version: f.v1.Version})
	}
	if diff := cmp.Diff(want, rep.Servers); diff != "" {
		t.Errorf("servers mismatch (-want +got):\n%s", diff)
	}
	if !rep.Final() {
		t.Error("got a retryable report, want final")
	}
	// Key Vault was asked about v1 once for both servers, and refused.
	if n := f.keyVaultRefusals(f.v1.Version); n != 1 {
		t.Errorf("got %d refused reads of %s, want 1", n, f.v1.Version)
	}
	if n := len(f.patches()); n != 0 {
		t.Errorf("got %d PATCHes, want none", n)
	}

	st := r.Status(t.Context())
	for _, id := range f.ids {
		if got := serverState(t, st, id); got.State != rotation.StateDisabled || got.Version != f.v1.Version {
			t.Errorf("status of %s: got %s on %s, want %s on %s", id, got.State, got.Version, rotation.StateDisabled, f.v1.Version)
		}
	}
}

// getsAfterLastPatch counts Resource Manager GETs of id after its last
// successful PATCH.
func (f *fixture) getsAfterLastPatch(id string) int {
	n := 0
	for _, r := range f.emu.Requests() {
		if r.Service != "arm" || !strings.EqualFold(r.Path, id) {
			continue
		}
		switch {
		case r.Method == http.MethodPatch && r.Status == http.StatusOK:
			n = 0
		case r.Method == http.MethodGet:
			n++
		}
	}
	return n
}

func TestRotate_ConfirmsWhenTheUpdateSettles(t *testing.T) {
	f := setup(t, 1)
	v2 := f.newVersion(t)
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, ProvisioningState: "Updating", StateReads: 2})

	synctest.Test(t, func(t *testing.T) {
		r := f.rotatorOver(t, transporter(f), nil)
		f.emu.ResetRequests()

		rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

		want := []rotation.ServerResult{{ID: f.ids[0], Outcome: rotation.Rotated,
			Reason:          "rotate from " + f.v1.Version + " to " + v2.Version,
			PreviousVersion: f.v1.Version, Version: v2.Version}}
		if diff := cmp.Diff(want, rep.Servers); diff != "" {
			t.Errorf("servers mismatch (-want +got):\n%s", diff)
		}
	})
	if n := len(f.patches()); n != 1 {
		t.Errorf("got %d PATCHes, want 1", n)
	}
	// Two reads show Updating; the third, Succeeded, confirms.
	if n := f.getsAfterLastPatch(f.ids[0]); n != 3 {
		t.Errorf("got %d GETs after the PATCH, want 3", n)
	}
}

func TestRotate_OnTargetButUnsettled(t *testing.T) {
	tests := []struct {
		state     string
		reason    string
		retryable bool
	}{
		{"Updating", "has not settled", true},
		{"Failed", "provisioningState Failed", false},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			f := setup(t, 2)
			v2 := f.newVersion(t)
			// The first server is on v2 already, its update not settled.
			if err := f.emu.SetServerKeyURL(f.ids[0], v2.KID); err != nil {
				t.Fatal(err)
			}
			if err := f.emu.SetServerProvisioningState(f.ids[0], tt.state); err != nil {
				t.Fatal(err)
			}
			r := f.rotator(t, nil)
			f.emu.ResetRequests()

			rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

			got := rep.Servers[0]
			if got.Outcome != rotation.Failed || got.Retryable != tt.retryable || !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("got %s %q retryable %v, want failed, reason containing %q, retryable %v",
					got.Outcome, got.Reason, got.Retryable, tt.reason, tt.retryable)
			}
			if rep.Servers[1].Outcome != rotation.Rotated {
				t.Errorf("other server: got %s (%s), want rotated", rep.Servers[1].Outcome, rep.Servers[1].Reason)
			}
			if n := f.patchesPerServer()[strings.ToLower(f.ids[0])]; n != 0 {
				t.Errorf("got %d PATCHes of the unsettled server, want none", n)
			}
			if rep.Final() == tt.retryable {
				t.Errorf("got Final %v, want %v", rep.Final(), !tt.retryable)
			}

			st := serverState(t, r.Status(t.Context()), f.ids[0])
			if st.State != rotation.StateUnsettled || st.Version != v2.Version || !strings.Contains(st.Error, tt.state) ||
				st.Retryable != tt.retryable {
				t.Errorf("status: got %+v, want %s on %s naming %s, retryable %v",
					st, rotation.StateUnsettled, v2.Version, tt.state, tt.retryable)
			}
		})
	}
}

// The map names the vault by its loopback URL; Key Vault answers kids
// naming another host, as a vault reached through an alias does. Fluid
// Relay would accept that host, so only the rotation's own check stands
// between it and a server's key URL moving to a vault the map never named.
func TestRotate_KidOnAnotherHostRefused(t *testing.T) {
	const alias = "cmk-kv1.vault.azure.net"
	tests := []struct {
		name string
		run  func(t *testing.T, f *fixture, r *rotation.Rotator, v2 emulator.KeyVersionInfo) []rotation.Report
	}{
		{"event", func(t *testing.T, f *fixture, r *rotation.Rotator, v2 emulator.KeyVersionInfo) []rotation.Report {
			e := f.event(t, v2)
			e.Key = f.key.WithVersion(v2.Version) // as the map names the vault
			res := r.HandleEvents(t.Context(), []rotation.Event{e})
			return []rotation.Report{*res[0].Report}
		}},
		{"manual", func(t *testing.T, f *fixture, r *rotation.Rotator, v2 emulator.KeyVersionInfo) []rotation.Report {
			return []rotation.Report{r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version), Manual: true})}
		}},
		{"versionless", func(t *testing.T, f *fixture, r *rotation.Rotator, v2 emulator.KeyVersionInfo) []rotation.Report {
			return []rotation.Report{r.Rotate(t.Context(), rotation.Request{Key: f.key})}
		}},
		{"reconcile", func(t *testing.T, f *fixture, r *rotation.Rotator, v2 emulator.KeyVersionInfo) []rotation.Report {
			return r.Reconcile(t.Context())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 2)
			v2 := f.newVersion(t)
			f.vault.SetKeyIDHost(alias)
			r := f.rotator(t, nil)
			f.emu.ResetRequests()

			reports := tt.run(t, f, r, v2)

			if len(reports) == 0 {
				t.Fatal("got no report, want one refusing the rotation")
			}
			for _, rep := range reports {
				if rep.Error == "" {
					t.Errorf("got report %+v, want an error", rep)
				}
				for _, s := range rep.Servers {
					if s.Outcome == rotation.Rotated {
						t.Errorf("%s: got rotated, want it not reported rotated", s.ID)
					}
				}
			}
			for _, p := range f.patches() {
				u, err := testenv.KeyURL(p.Body)
				if err != nil {
					t.Fatal(err)
				}
				if pu, err := url.Parse(u); err != nil || !strings.EqualFold(pu.Host, f.key.Vault) {
					t.Errorf("a PATCH wrote %s, want only the map's host %s", u, f.key.Vault)
				}
			}
			if n := len(f.patches()); n != 0 {
				t.Errorf("got %d PATCHes, want none", n)
			}
			for _, id := range f.ids {
				if got, _ := f.emu.ServerKeyURL(id); got != f.v1.KID {
					t.Errorf("%s: got key URL %q, want it left on %q", id, got, f.v1.KID)
				}
			}
		})
	}
}

// An event naming the kid's host names a vault the map does not: it is
// ignored without a call.
func TestHandleEvents_KidHostNotInMapIgnored(t *testing.T) {
	f := setup(t, 1)
	f.vault.SetKeyIDHost("cmk-kv1.vault.azure.net")
	v2 := f.newVersion(t)
	r := f.rotator(t, nil)
	f.emu.ResetRequests()

	res := r.HandleEvents(t.Context(), []rotation.Event{f.event(t, v2)})

	if res[0].Ignored != rotation.IgnoredNotSubscribed || res[0].Report != nil {
		t.Errorf("got ignored %q report %v, want ignored %q", res[0].Ignored, res[0].Report, rotation.IgnoredNotSubscribed)
	}
	if reqs := f.emu.Requests(); len(reqs) != 0 {
		t.Errorf("got %d requests, want none", len(reqs))
	}
}

// TestStatus_KidOnAnotherHost: status does not take a version Key Vault
// names on another host for the mapped key's current version.
func TestStatus_KidOnAnotherHost(t *testing.T) {
	f := setup(t, 1)
	f.newVersion(t)
	f.vault.SetKeyIDHost("cmk-kv1.vault.azure.net")

	st := f.rotator(t, nil).Status(t.Context())

	ks := st.Keys[0]
	if ks.Error == "" || ks.CurrentVersion != "" {
		t.Errorf("got current version %q, error %q; want no current version and an error", ks.CurrentVersion, ks.Error)
	}
	if len(ks.SafeToDisable) != 0 {
		t.Errorf("got safe to disable %v, want none offered", ks.SafeToDisable)
	}
	// Key Vault names that host for the server's version too: no retry
	// clears that.
	if s := ks.Servers[0]; s.Retryable || s.Error == "" {
		t.Errorf("server: got %+v, want a final state with an error", s)
	}
}

// TestRotate_UpdateProvisioningFails: a PATCH whose provisioning ends
// Failed is a final failure at once, as a server found in that state is;
// and while a server has not settled, status offers no version to disable.
func TestRotate_UpdateProvisioningFails(t *testing.T) {
	f := setup(t, 2)
	v2 := f.newVersion(t)
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, PathSuffix: path.Base(f.ids[0]),
		ProvisioningState: "Failed"})
	r := f.rotator(t, nil)

	rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

	got := rep.Servers[0]
	if got.Outcome != rotation.Failed || got.Retryable || !strings.Contains(got.Reason, "provisioning failed") {
		t.Errorf("got %s %q retryable %v, want a final failure naming the failed provisioning", got.Outcome, got.Reason, got.Retryable)
	}
	if rep.Servers[1].Outcome != rotation.Rotated {
		t.Errorf("other server: got %s (%s), want rotated", rep.Servers[1].Outcome, rep.Servers[1].Reason)
	}
	again := r.Rotate(t.Context(), rotation.Request{Key: f.key})
	if s := again.Servers[0]; s.Outcome != rotation.Failed || s.Retryable {
		t.Errorf("reconcile after: got %s retryable %v, want the same final failure", s.Outcome, s.Retryable)
	}

	ks := r.Status(t.Context()).Keys[0]
	if len(ks.SafeToDisable) != 0 {
		t.Errorf("got safe to disable %v while a server has not settled, want none", ks.SafeToDisable)
	}
}

// TestStatus_CurrentVersionUnusable: status says once, for the key, that
// its current version cannot protect a server.
func TestStatus_CurrentVersionUnusable(t *testing.T) {
	f := setup(t, 1)
	if _, err := f.vault.CreateKey("cmk", emulator.KeyOptions{Type: "EC"}); err != nil {
		t.Fatal(err)
	}

	ks := f.rotator(t, nil).Status(t.Context()).Keys[0]

	if !strings.Contains(ks.Error, "cannot protect a server") || !strings.Contains(ks.Error, "EC") {
		t.Errorf("got key error %q, want one saying the EC current version cannot protect a server", ks.Error)
	}
}

// A server on a version newer than the target is never moved back, even
// when that version is disabled: Key Vault refuses to describe it (403),
// but its listing still dates it.
func TestRotate_NewerDisabledVersionNeverMovedBack(t *testing.T) {
	tests := []struct {
		name string
		// run rotates towards v2; v3 is the disabled version, v4 (when
		// made) a newer enabled one.
		run     func(t *testing.T, f *fixture, v2, v3 emulator.KeyVersionInfo) rotation.Report
		current bool // create an enabled v4 after v3
	}{
		{"manual to an older version", func(t *testing.T, f *fixture, v2, _ emulator.KeyVersionInfo) rotation.Report {
			r := f.rotator(t, nil)
			return r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version), Manual: true})
		}, true},
		{"event while the current version read lags", func(t *testing.T, f *fixture, v2, _ emulator.KeyVersionInfo) rotation.Report {
			r := f.rotator(t, func(c *rotation.Config) {
				c.Keys = staleCurrent{Keys: c.Keys, current: f.key.WithVersion(v2.Version)}
			})
			return *r.HandleEvents(t.Context(), []rotation.Event{f.event(t, v2)})[0].Report
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 2)
			v2 := f.newVersion(t)
			v3 := f.newVersion(t)
			if tt.current {
				f.newVersion(t)
			}
			if err := f.emu.SetServerKeyURL(f.ids[1], v3.KID); err != nil {
				t.Fatal(err)
			}
			if err := f.vault.SetEnabled("cmk", v3.Version, false); err != nil {
				t.Fatal(err)
			}
			f.emu.ResetRequests()

			rep := tt.run(t, f, v2, v3)

			want := []rotation.ServerResult{
				{ID: f.ids[0], Outcome: rotation.Rotated, Reason: "rotate from " + f.v1.Version + " to " + v2.Version,
					PreviousVersion: f.v1.Version, Version: v2.Version},
				{ID: f.ids[1], Outcome: rotation.Skipped, Reason: rotation.ReasonNewer,
					PreviousVersion: v3.Version, Version: v3.Version},
			}
			if diff := cmp.Diff(want, rep.Servers); diff != "" {
				t.Errorf("servers mismatch (-want +got):\n%s", diff)
			}
			if n := f.keyVaultRefusals(v3.Version); n != 1 {
				t.Errorf("got %d refused reads of %s, want 1", n, v3.Version)
			}
			if n := f.patchesPerServer()[strings.ToLower(f.ids[1])]; n != 0 {
				t.Errorf("got %d PATCHes of the server on the newer version, want none", n)
			}
			if got, _ := f.emu.ServerKeyURL(f.ids[1]); got != v3.KID {
				t.Errorf("got key URL %q, want it left on %q", got, v3.KID)
			}
		})
	}
}

// TestStatus_CurrentVersionUnavailable: when the key's current version
// cannot be read for a reason a retry will not clear, each server that
// was read is placed by what was read; only a server whose read failed
// is unreachable.
func TestStatus_CurrentVersionUnavailable(t *testing.T) {
	type state struct {
		State     string
		Version   string
		Retryable bool
	}
	tests := []struct {
		name  string
		spoil func(t *testing.T, f *fixture) (v2 emulator.KeyVersionInfo)
		want  func(f *fixture, v2 emulator.KeyVersionInfo) []state
	}{
		{"current version disabled", func(t *testing.T, f *fixture) emulator.KeyVersionInfo {
			v2 := f.newVersion(t)
			if err := f.emu.SetServerKeyURL(f.ids[0], v2.KID); err != nil {
				t.Fatal(err)
			}
			if err := f.vault.SetEnabled("cmk", v2.Version, false); err != nil {
				t.Fatal(err)
			}
			return v2
		}, func(f *fixture, v2 emulator.KeyVersionInfo) []state {
			return []state{
				{rotation.StateDisabled, v2.Version, false},
				{rotation.StateLagging, f.v1.Version, false},
				{rotation.StateUnreachable, "", true},
			}
		}},
		{"key deleted", func(t *testing.T, f *fixture) emulator.KeyVersionInfo {
			if err := f.vault.DeleteKey("cmk"); err != nil {
				t.Fatal(err)
			}
			return emulator.KeyVersionInfo{}
		}, func(f *fixture, _ emulator.KeyVersionInfo) []state {
			return []state{
				{rotation.StateGone, f.v1.Version, false},
				{rotation.StateGone, f.v1.Version, false},
				{rotation.StateUnreachable, "", true},
			}
		}},
		{"current version read refused for good", func(t *testing.T, f *fixture) emulator.KeyVersionInfo {
			// A 400 on versionless reads only: the servers' version
			// still reads fine.
			f.emu.InjectFault(emulator.Fault{Service: "keyvault", Method: http.MethodGet, PathSuffix: "/keys/cmk/",
				Status: http.StatusBadRequest, Code: "BadParameter"})
			return emulator.KeyVersionInfo{}
		}, func(f *fixture, _ emulator.KeyVersionInfo) []state {
			return []state{
				{rotation.StateUnknown, f.v1.Version, false},
				{rotation.StateUnknown, f.v1.Version, false},
				{rotation.StateUnreachable, "", true},
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 3)
			v2 := tt.spoil(t, f)
			f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, PathSuffix: "/relay-3",
				Status: http.StatusServiceUnavailable})

			synctest.Test(t, func(t *testing.T) {
				ks := f.rotatorOver(t, transporter(f), nil).Status(t.Context()).Keys[0]

				if ks.Error == "" || ks.Retryable || ks.CurrentVersion != "" {
					t.Errorf("key: got error %q retryable %v current %q, want a final error and no current version",
						ks.Error, ks.Retryable, ks.CurrentVersion)
				}
				var got []state
				for _, s := range ks.Servers {
					got = append(got, state{s.State, s.Version, s.Retryable})
					if s.State != rotation.StateLagging && s.Error == "" {
						t.Errorf("%s: got state %s and no error, want one saying what to do", s.ID, s.State)
					}
				}
				if diff := cmp.Diff(tt.want(f, v2), got); diff != "" {
					t.Errorf("servers mismatch (-want +got):\n%s", diff)
				}
				if len(ks.SafeToDisable) != 0 {
					t.Errorf("got safe to disable %v, want none", ks.SafeToDisable)
				}
			})
		})
	}
}
