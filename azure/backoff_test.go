package azure_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// These tests wait through backoff, Retry-After and deadlines in a
// testing/synctest bubble: the SDK clients reach the emulator through its
// in-process transport, and no test sleeps in real time.

func TestRotate_ConflictThenSuccess(t *testing.T) {
	f := setup(t, 1)
	v2 := f.newVersion(t)
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: http.StatusConflict,
		Code: "AnotherOperationInProgress", Times: 2})

	synctest.Test(t, func(t *testing.T) {
		r := f.rotatorOver(t, transporter(f), nil)
		start := time.Now()

		rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

		if got := rep.Servers[0]; got.Outcome != rotation.Rotated {
			t.Fatalf("got %s (%s), want rotated", got.Outcome, got.Reason)
		}
		if elapsed := time.Since(start); elapsed < 500*time.Millisecond {
			t.Errorf("rotated after %v, want it after a backoff", elapsed)
		}
	})
	var statuses []int
	for _, p := range f.patches() {
		statuses = append(statuses, p.Status)
	}
	if fmt.Sprint(statuses) != "[409 409 200]" {
		t.Errorf("got PATCH statuses %v, want [409 409 200]", statuses)
	}
	if !f.confirmedAfterPatch(f.ids[0]) {
		t.Error("no GET confirmed the PATCH")
	}
}

func TestRotate_StaleReadsAfterPatch(t *testing.T) {
	tests := []struct {
		stale int
		want  rotation.Outcome
	}{
		{2, rotation.Rotated},
		{20, rotation.Failed}, // never confirmed within the bounded reads
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d stale reads", tt.stale), func(t *testing.T) {
			f := setup(t, 1)
			v2 := f.newVersion(t)
			f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, StaleReads: tt.stale})

			synctest.Test(t, func(t *testing.T) {
				r := f.rotatorOver(t, transporter(f), nil)
				rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

				got := rep.Servers[0]
				if got.Outcome != tt.want {
					t.Errorf("got %s (%s), want %s", got.Outcome, got.Reason, tt.want)
				}
				if got.Outcome == rotation.Failed && !got.Retryable {
					t.Errorf("unconfirmed update: got final, want retryable")
				}
			})
		})
	}
}

func TestRotate_ThrottledServerEndsTheRunInTime(t *testing.T) {
	tests := []struct {
		name        string
		concurrency int
	}{
		{"one at a time", 1},
		{"eight at a time", 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 50)
			v2 := f.newVersion(t)
			f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, PathSuffix: "/relay-37",
				Status: http.StatusTooManyRequests, RetryAfter: 120 * time.Second})
			const deadline = 25 * time.Second

			synctest.Test(t, func(t *testing.T) {
				r := f.rotatorOver(t, transporter(f), func(c *rotation.Config) {
					c.Concurrency, c.Deadline = tt.concurrency, deadline
				})
				start := time.Now()

				rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

				if elapsed := time.Since(start); elapsed >= deadline {
					t.Errorf("returned after %v, want before the %v deadline", elapsed, deadline)
				}
				for i, s := range rep.Servers {
					url, _ := f.emu.ServerKeyURL(s.ID)
					switch {
					case s.Outcome == rotation.Rotated && url != v2.KID:
						t.Errorf("server %d reported rotated but is on %s", i+1, url)
					case s.Outcome == rotation.Rotated && !f.confirmedAfterPatch(s.ID):
						t.Errorf("server %d reported rotated, but no GET after its PATCH confirmed it", i+1)
					case s.Outcome == rotation.Failed && !s.Retryable:
						t.Errorf("server %d failed finally (%s), want retryable", i+1, s.Reason)
					case tt.concurrency == 1 && i < 36 && s.Outcome != rotation.Rotated:
						t.Errorf("server %d: got %s (%s), want rotated", i+1, s.Outcome, s.Reason)
					case tt.concurrency == 1 && i >= 36 && s.Outcome != rotation.Failed:
						t.Errorf("server %d: got %s, want failed and retryable", i+1, s.Outcome)
					}
				}
				if s := rep.Servers[36]; s.Outcome != rotation.Failed || !s.Retryable {
					t.Errorf("server 37: got %s retryable %v, want failed and retryable", s.Outcome, s.Retryable)
				}
				if rep.Final() || !rep.Retryable {
					t.Errorf("got final %v, retryable %v; want a retryable report, for a redelivery to finish the rest",
						rep.Final(), rep.Retryable)
				}
			})
		})
	}
}

func TestFluidRelay_RetryAfterPastDeadline(t *testing.T) {
	f := setup(t, 1)
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet,
		Status: http.StatusTooManyRequests, RetryAfter: 10 * time.Second})

	synctest.Test(t, func(t *testing.T) {
		_, relays := f.adapters(t, transporter(f))
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		start := time.Now()

		_, err := relays.Get(ctx, f.ids[0])

		ra, ok := errors.AsType[*rotation.RetryAfterError](err)
		if !ok || ra.After != 10*time.Second || !errors.Is(err, rotation.ErrRetryable) {
			t.Fatalf("got %v, want a retryable *RetryAfterError of 10s", err)
		}
		if elapsed := time.Since(start); elapsed != 0 {
			t.Errorf("returned after %v, want at once: the wait outlasts the deadline", elapsed)
		}
	})
}

func TestRotate_SlowServersReportedAtTheDeadline(t *testing.T) {
	f := setup(t, 20)
	v2 := f.newVersion(t)
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, Latency: 4 * time.Second})
	const deadline = 10 * time.Second

	synctest.Test(t, func(t *testing.T) {
		r := f.rotatorOver(t, transporter(f), func(c *rotation.Config) { c.Concurrency, c.Deadline = 4, deadline })
		start := time.Now()

		rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

		if elapsed := time.Since(start); elapsed > deadline {
			t.Errorf("returned after %v, want by the %v deadline", elapsed, deadline)
		}
		var rotated, failed int
		for _, s := range rep.Servers {
			url, _ := f.emu.ServerKeyURL(s.ID)
			switch {
			case s.Outcome == rotation.Rotated && url == v2.KID:
				rotated++
			case s.Outcome == rotation.Failed && s.Retryable:
				failed++
			default:
				t.Errorf("%s: got %s retryable %v on %s", s.ID, s.Outcome, s.Retryable, url)
			}
		}
		if rotated == 0 || failed == 0 {
			t.Errorf("got %d rotated and %d failed, want some of each", rotated, failed)
		}
	})
}

// A rotation whose every server read fails with 503 says, at the top,
// that a retry may succeed: nothing in it needs a person.
func TestRotate_UnavailableServersMakeARetryableReport(t *testing.T) {
	f := setup(t, 3)
	v2 := f.newVersion(t)
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, Status: http.StatusServiceUnavailable})

	synctest.Test(t, func(t *testing.T) {
		r := f.rotatorOver(t, transporter(f), nil)

		rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version), Manual: true})

		for _, s := range rep.Servers {
			if s.Outcome != rotation.Failed || !s.Retryable {
				t.Errorf("%s: got %s retryable %v, want failed and retryable", s.ID, s.Outcome, s.Retryable)
			}
		}
		if len(rep.Servers) != 3 || rep.Error != "" {
			t.Fatalf("got %d servers, key error %q; want 3 servers and no key error", len(rep.Servers), rep.Error)
		}
		if !rep.Retryable || rep.Final() {
			t.Errorf("got retryable %v, final %v; want retryable, not final", rep.Retryable, rep.Final())
		}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"retryable":true`) {
			t.Errorf("got %s, want \"retryable\":true", b)
		}
	})
	if n := len(f.patches()); n != 0 {
		t.Errorf("got %d PATCHes, want none", n)
	}
}
