package rotation_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// TestRotate_OneRotationPerKeyAtATime delivers twenty events for v2 and,
// once the first PATCH for v2 is in flight, creates v3 and delivers twenty
// events for it. Rotations of the key must not overlap: v3 is never lost,
// no PATCH writes v2 once v3 was written, and no server ever has two
// PATCHes in flight.
func TestRotate_OneRotationPerKeyAtATime(t *testing.T) {
	w := newWorld(t, 4)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	w.emu.ResetRequests()
	var v3 emulator.KeyVersionInfo

	synctest.Test(t, func(t *testing.T) {
		r := w.rotator(t)
		w.watch.holdFirstPatch()
		var wg sync.WaitGroup
		deliver := func(e rotation.Event) {
			for range 20 {
				wg.Go(func() { r.HandleEvents(t.Context(), []rotation.Event{e}) })
			}
		}
		deliver(w.event(t, v2))
		<-w.watch.holding
		if v3, err = w.vault.RotateKey("cmk"); err != nil {
			t.Fatal(err)
		}
		deliver(w.event(t, v3))
		// Whatever can run while the first PATCH is held runs now: a
		// second rotation of the key would PATCH beside it.
		synctest.Wait()
		close(w.watch.hold)
		wg.Wait()
	})

	for _, id := range w.ids {
		if got, _ := w.emu.ServerKeyURL(id); got != v3.KID {
			t.Errorf("%s: got key URL %q, want %q", id, got, v3.KID)
		}
	}
	for id, versions := range w.written() {
		if i := slices.Index(versions, v3.Version); i >= 0 && slices.Contains(versions[i:], v2.Version) {
			t.Errorf("%s: got PATCHes writing %v, want none for v2 after v3", id, versions)
		}
		if len(versions) > 2 {
			t.Errorf("%s: got %d PATCHes %v, want at most one per version", id, len(versions), versions)
		}
	}
	if got := w.watch.maxInFlight(); got != 1 {
		t.Errorf("got up to %d PATCHes in flight for one server, want 1", got)
	}
}

// TestRotate_OtherOptionsQueueBehind checks that a dry run and a manual
// request made while an event rotation runs wait for it and get reports of
// their own kind, not the event's.
func TestRotate_OtherOptionsQueueBehind(t *testing.T) {
	w := newWorld(t, 2)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	var event, dry, manual rotation.Report

	synctest.Test(t, func(t *testing.T) {
		r := w.rotator(t)
		w.watch.holdFirstPatch()
		var wg sync.WaitGroup
		wg.Go(func() { event = r.Rotate(t.Context(), rotation.Request{Key: w.key.WithVersion(v2.Version)}) })
		<-w.watch.holding
		wg.Go(func() {
			dry = r.Rotate(t.Context(), rotation.Request{Key: w.key.WithVersion(v2.Version), DryRun: true})
		})
		synctest.Wait() // the dry run queues first
		wg.Go(func() {
			manual = r.Rotate(t.Context(), rotation.Request{Key: w.key.WithVersion(w.v1.Version), Manual: true, AllowOlder: true})
		})
		synctest.Wait()
		close(w.watch.hold)
		wg.Wait()
	})

	for _, s := range event.Servers {
		if s.Outcome != rotation.Rotated {
			t.Errorf("event: %s got %s (%s), want rotated", s.ID, s.Outcome, s.Reason)
		}
	}
	if !dry.DryRun {
		t.Errorf("dry run: got a report with DryRun false, want true")
	}
	for _, s := range dry.Servers {
		if s.Outcome != rotation.Current {
			t.Errorf("dry run after the event: %s got %s (%s), want current", s.ID, s.Outcome, s.Reason)
		}
	}
	if manual.TargetVersion != w.v1.Version {
		t.Errorf("manual: got target %s, want %s", manual.TargetVersion, w.v1.Version)
	}
	// The manual request ran after the event's rotation, so it is what
	// the servers show now.
	for _, id := range w.ids {
		if got, _ := w.emu.ServerKeyURL(id); got != w.v1.KID {
			t.Errorf("%s: got key URL %q, want %q", id, got, w.v1.KID)
		}
	}
	if got := w.watch.maxInFlight(); got != 1 {
		t.Errorf("got up to %d PATCHes in flight for one server, want 1", got)
	}
}

// TestRotate_WaiterGivesUp checks that a request which stops waiting for
// a running rotation gets a retryable report, and that the key's queue
// still moves on.
func TestRotate_WaiterGivesUp(t *testing.T) {
	w := newWorld(t, 1)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}

	synctest.Test(t, func(t *testing.T) {
		r := w.rotator(t)
		w.watch.holdFirstPatch()
		var wg sync.WaitGroup
		wg.Go(func() { r.Rotate(t.Context(), rotation.Request{Key: w.key.WithVersion(v2.Version)}) })
		<-w.watch.holding

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		rep := r.Rotate(ctx, rotation.Request{Key: w.key})
		if !rep.Retryable || !strings.Contains(rep.Error, "gave up waiting") {
			t.Errorf("got error %q retryable %t, want a retryable give-up", rep.Error, rep.Retryable)
		}

		close(w.watch.hold)
		wg.Wait()
		rep = r.Rotate(t.Context(), rotation.Request{Key: w.key})
		if len(rep.Servers) != 1 || rep.Servers[0].Outcome != rotation.Current {
			t.Errorf("after the rotation: got %+v, want the server current", rep.Servers)
		}
	})
}
