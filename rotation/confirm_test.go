package rotation_test

import (
	"testing"
	"time"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// A server put back on an old version behind the product's back, right
// after it was rotated, is read and moved forward again when the same
// event arrives once more: a recent confirmation never stands in for a
// read that Resource Manager has the budget for.
func TestRotate_RevertedServerReadAgain(t *testing.T) {
	w := newWorld(t, 3)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	r := w.rotator(t)
	req := rotation.Request{Key: w.event(t, v2).Key}
	if rep := r.Rotate(t.Context(), req); !rep.OK() {
		t.Fatalf("first rotation: %+v", rep)
	}

	if err := w.emu.SetServerKeyURL(w.ids[0], w.v1.KID); err != nil {
		t.Fatal(err)
	}
	rep := r.Rotate(t.Context(), req)

	got := map[string]rotation.Outcome{}
	for _, s := range rep.Servers {
		got[s.ID] = s.Outcome
	}
	want := map[string]rotation.Outcome{w.ids[0]: rotation.Rotated, w.ids[1]: rotation.Current, w.ids[2]: rotation.Current}
	for id, o := range want {
		if got[id] != o {
			t.Errorf("%s: got %s, want %s", id, got[id], o)
		}
	}
	if url, _ := w.emu.ServerKeyURL(w.ids[0]); url != v2.KID {
		t.Errorf("reverted server: got %s, want %s", url, v2.KID)
	}
}

// Status names what stops a lagging server from being rotated: its
// version disabled or expired, or the server itself gone.
func TestStatus_BlockedServers(t *testing.T) {
	w := newWorld(t, 4)
	v2, err := w.vault.CreateKey("cmk", emulator.KeyOptions{Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.vault.RotateKey("cmk"); err != nil {
		t.Fatal(err)
	}
	if err := w.emu.SetServerKeyURL(w.ids[1], v2.KID); err != nil {
		t.Fatal(err)
	}
	if err := w.vault.SetExpires("cmk", v2.Version, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := w.vault.SetEnabled("cmk", w.v1.Version, false); err != nil {
		t.Fatal(err)
	}
	if err := w.emu.DeleteServer(w.ids[2]); err != nil {
		t.Fatal(err)
	}
	if err := w.emu.SetServerKeyURL(w.ids[3], w.key.String()); err != nil {
		t.Fatal(err)
	}

	st := w.rotator(t).Status(t.Context())

	want := map[string]string{
		w.ids[0]: rotation.StateDisabled, w.ids[1]: rotation.StateExpired,
		w.ids[2]: rotation.StateNotFound, w.ids[3]: rotation.StateVersionless,
	}
	for _, s := range st.Keys[0].Servers {
		if s.State != want[s.ID] {
			t.Errorf("%s: got state %q, want %q", s.ID, s.State, want[s.ID])
		}
		if s.State != rotation.StateVersionless && s.Error == "" {
			t.Errorf("%s: got no error, want one that says what to do", s.ID)
		}
	}
}
