package rotation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
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

// laggingKeys answers an older version as the key's current one, as a
// Key Vault replica that has not yet seen the newest version would.
type laggingKeys struct {
	rotation.Keys
	current rotation.KeyRef
}

func (k laggingKeys) Key(ctx context.Context, ref rotation.KeyRef) (rotation.KeyVersion, error) {
	if ref.Version == "" {
		ref = k.current
	}
	return k.Keys.Key(ctx, ref)
}

// Events for two versions handled together target the newer of them even
// when Key Vault still calls the older one current.
func TestHandleEvents_MergedVersionsKeepTheNewest(t *testing.T) {
	w := newWorld(t, 2)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	v3, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	r := w.rotatorWith(t, func(c *rotation.Config) {
		c.Keys = laggingKeys{Keys: c.Keys, current: w.key.WithVersion(v2.Version)}
	})

	results := r.HandleEvents(t.Context(), []rotation.Event{w.event(t, v3), w.event(t, v2)})

	if rep := results[0].Report; rep == nil || rep.TargetVersion != v3.Version {
		t.Fatalf("got report %+v, want target %s", rep, v3.Version)
	}
	for _, id := range w.ids {
		if got, _ := w.emu.ServerKeyURL(id); got != v3.KID {
			t.Errorf("%s: got %s, want %s", id, got, v3.KID)
		}
	}
}

// panicky panics when it reads one server.
type panicky struct {
	rotation.Servers
	id string
}

func (p panicky) Get(ctx context.Context, id string) (rotation.Server, error) {
	if id == p.id {
		panic("boom")
	}
	return p.Servers.Get(ctx, id)
}

// A panic while handling one server fails that server only; the others
// are rotated and the key's queue moves on.
func TestRotate_PanicFailsOneServer(t *testing.T) {
	w := newWorld(t, 3)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	r := w.rotatorWith(t, func(c *rotation.Config) { c.Servers = panicky{Servers: c.Servers, id: w.ids[1]} })

	rep := r.Rotate(t.Context(), rotation.Request{Key: w.key.WithVersion(v2.Version)})

	want := map[string]rotation.Outcome{w.ids[0]: rotation.Rotated, w.ids[1]: rotation.Failed, w.ids[2]: rotation.Rotated}
	for _, s := range rep.Servers {
		if s.Outcome != want[s.ID] {
			t.Errorf("%s: got %s (%s), want %s", s.ID, s.Outcome, s.Reason, want[s.ID])
		}
		if s.ID == w.ids[1] && (s.Retryable || !strings.Contains(s.Reason, "boom")) {
			t.Errorf("%s: got %+v, want a final failure naming the panic", s.ID, s)
		}
	}
	again := r.Rotate(t.Context(), rotation.Request{Key: w.key})
	if len(again.Servers) != 3 {
		t.Errorf("second rotation: got %+v, want one that ran", again)
	}
}

// recordingLocker grants locks and records what was locked and whether a
// PATCH happened while the lock was held.
type recordingLocker struct {
	mu      sync.Mutex
	held    map[string]bool
	locked  []string
	refuse  error
	patched []bool // per SetKeyURL: was some lock held
}

func (l *recordingLocker) Lock(ctx context.Context, key string) (func(), error) {
	if l.refuse != nil {
		return nil, l.refuse
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held[key], l.locked = true, append(l.locked, key)
	return func() { l.mu.Lock(); delete(l.held, key); l.mu.Unlock() }, nil
}

type lockWatch struct {
	rotation.Servers
	l *recordingLocker
}

func (w lockWatch) SetKeyURL(ctx context.Context, id, url string) (rotation.Server, error) {
	w.l.mu.Lock()
	w.l.patched = append(w.l.patched, len(w.l.held) > 0)
	w.l.mu.Unlock()
	return w.Servers.SetKeyURL(ctx, id, url)
}

// With a Locker, a rotation writes only while it holds the key's lock,
// and a lock it cannot get postpones the rotation without a call to Azure.
func TestRotate_Locker(t *testing.T) {
	w := newWorld(t, 2)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	l := &recordingLocker{held: map[string]bool{}}
	r := w.rotatorWith(t, func(c *rotation.Config) {
		c.Locker, c.Servers = l, lockWatch{Servers: c.Servers, l: l}
	})

	if rep := r.Rotate(t.Context(), rotation.Request{Key: w.key.WithVersion(v2.Version)}); !rep.OK() {
		t.Fatalf("got %+v, want the servers rotated", rep)
	}
	if len(l.locked) != 1 || l.locked[0] != w.key.ID() {
		t.Errorf("got locks %q, want one for %s", l.locked, w.key.ID())
	}
	if len(l.patched) != 2 || !l.patched[0] || !l.patched[1] {
		t.Errorf("got PATCHes under the lock %v, want both under it", l.patched)
	}
	if len(l.held) != 0 {
		t.Errorf("got locks still held %v, want none", l.held)
	}

	l.refuse = errors.New("lease already present")
	w.emu.ResetRequests()
	rep := r.Rotate(t.Context(), rotation.Request{Key: w.key})
	if rep.ErrorKind != rotation.KindBusy || !rep.Retryable || len(w.emu.Requests()) != 0 {
		t.Errorf("got %+v and %d requests, want a retryable busy report and no call to Azure", rep, len(w.emu.Requests()))
	}
}

// Reconcile stays inside its budget, under the host's function timeout,
// however slow Resource Manager is: keys it had no time for are reported
// retryable, not left to the host's kill.
func TestReconcile_Budget(t *testing.T) {
	w := newWorld(t, 1) // its own map is replaced below
	const keys = 48     // 12 rounds of 4 keys × a 25 s deadline: past the 4-minute budget
	var targets []any
	for i := range keys {
		v, err := w.vault.CreateKey(fmt.Sprintf("cmk%d", i), emulator.KeyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		id, err := w.emu.PutServer(emulator.ServerSpec{Name: fmt.Sprintf("relay-k%d", i), KeyURL: v.KID})
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := rotation.ParseKeyURL(v.KID)
		targets = append(targets, map[string]any{"key": ref.Versionless().String(), "servers": []string{id}})
	}
	doc, _ := json.Marshal(map[string]any{"targets": targets})
	mapped, err := rotation.ParseTargets(doc)
	if err != nil {
		t.Fatal(err)
	}
	// Every server read takes a minute: each key uses its whole deadline.
	w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, Latency: time.Minute})

	synctest.Test(t, func(t *testing.T) {
		r := w.rotatorWith(t, func(c *rotation.Config) { c.Targets = mapped })
		start := time.Now()
		reps := r.Reconcile(t.Context())
		elapsed := time.Since(start)

		if elapsed > 5*time.Minute {
			t.Errorf("reconcile took %s, want it inside the host's 5-minute function timeout", elapsed)
		}
		notReached := 0
		for _, rep := range reps {
			if rep.ErrorKind == rotation.KindBusy && rep.Retryable {
				notReached++
			}
		}
		if len(reps) != keys || notReached == 0 || notReached == keys {
			t.Errorf("got %d reports, %d not reached; want %d reports, some but not all not reached",
				len(reps), notReached, keys)
		}
	})
}
