package azure_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// TestReconcile_IaCRevert: after a rotation, a deployment writes the old
// version back to one server behind the product's back; reconcile moves
// it forward again, says so, and leaves the others alone.
func TestReconcile_IaCRevert(t *testing.T) {
	f := setup(t, 3)
	v2 := f.newVersion(t)
	r := f.rotator(t, nil)
	if rep := r.Rotate(t.Context(), rotation.Request{Key: f.key}); !rep.OK() {
		t.Fatalf("rotation: %+v", rep)
	}
	if err := f.emu.SetServerKeyURL(f.ids[1], f.v1.KID); err != nil {
		t.Fatal(err)
	}
	f.emu.ResetRequests()

	reps := r.Reconcile(t.Context())

	if len(reps) != 1 {
		t.Fatalf("got %d reports, want 1", len(reps))
	}
	want := []rotation.ServerResult{
		{ID: f.ids[0], Outcome: rotation.Current, Reason: rotation.ReasonCurrent, PreviousVersion: v2.Version, Version: v2.Version},
		{ID: f.ids[1], Outcome: rotation.Rotated, Reason: "rotate from " + f.v1.Version + " to " + v2.Version,
			PreviousVersion: f.v1.Version, Version: v2.Version},
		{ID: f.ids[2], Outcome: rotation.Current, Reason: rotation.ReasonCurrent, PreviousVersion: v2.Version, Version: v2.Version},
	}
	if diff := cmp.Diff(want, reps[0].Servers); diff != "" {
		t.Errorf("servers (-want +got):\n%s", diff)
	}
	if got, _ := f.emu.ServerKeyURL(f.ids[1]); got != v2.KID || !f.confirmedAfterPatch(f.ids[1]) {
		t.Errorf("got %s, want %s confirmed by a GET", got, v2.KID)
	}
	if n := len(f.patches()); n != 1 {
		t.Errorf("got %d PATCHes, want 1 (the reverted server only)", n)
	}
}

// TestReconcile_KeyRecreated: the key is deleted and created again under
// the same name, so the version every server is on no longer exists.
// Nothing is PATCHed, and the report says why.
func TestReconcile_KeyRecreated(t *testing.T) {
	tests := []struct {
		name      string
		opts      emulator.KeyOptions
		wantError bool // the new version itself is refused
	}{
		{"as a valid RSA key", emulator.KeyOptions{}, false},
		{"as an EC key", emulator.KeyOptions{Type: "EC"}, true},
		{"without wrapKey", emulator.KeyOptions{Ops: []string{"encrypt", "decrypt"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 2)
			if err := f.vault.DeleteKey("cmk"); err != nil {
				t.Fatal(err)
			}
			if _, err := f.vault.CreateKey("cmk", tt.opts); err != nil {
				t.Fatal(err)
			}
			r := f.rotator(t, nil)
			f.emu.ResetRequests()

			reps := r.Reconcile(t.Context())

			rep := reps[0]
			if n := len(f.patches()); n != 0 {
				t.Errorf("got %d PATCHes, want none", n)
			}
			if !rep.Final() || rep.OK() {
				t.Errorf("got final %v, OK %v; want a final failure a person must look at", rep.Final(), rep.OK())
			}
			if tt.wantError {
				if rep.Error == "" {
					t.Errorf("got no key error, want the new version refused")
				}
				return
			}
			for _, s := range rep.Servers {
				if s.Outcome != rotation.Failed || s.Reason != rotation.ReasonPreviousGone || s.PreviousVersion != f.v1.Version {
					t.Errorf("%s: got %s %q on %q, want failed, %q on %s", s.ID, s.Outcome, s.Reason,
						s.PreviousVersion, rotation.ReasonPreviousGone, f.v1.Version)
				}
			}
			for _, id := range f.ids {
				if got, _ := f.emu.ServerKeyURL(id); got != f.v1.KID {
					t.Errorf("%s: got %s, want it untouched on %s", id, got, f.v1.KID)
				}
			}
		})
	}
}

// TestStatus_KeyRecreated: status must say that the servers' version no
// longer exists, not that they are merely behind.
func TestStatus_KeyRecreated(t *testing.T) {
	f := setup(t, 1)
	if err := f.vault.DeleteKey("cmk"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	f.emu.ResetRequests()

	st := f.rotator(t, nil).Status(t.Context())

	for _, r := range f.emu.Requests() {
		if r.Method != http.MethodGet && r.Service == "arm" {
			t.Errorf("status wrote: %s %s", r.Method, r.Path)
		}
	}
	s := st.Keys[0].Servers[0]
	if s.State != rotation.StateGone {
		t.Errorf("got state %q, want %q", s.State, rotation.StateGone)
	}
	if !strings.Contains(s.Error, f.v1.Version) || !strings.Contains(s.Error, "no longer exists") {
		t.Errorf("got state %q, error %q; want an error saying version %s no longer exists", s.State, s.Error, f.v1.Version)
	}
}
