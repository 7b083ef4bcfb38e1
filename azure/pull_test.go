package azure_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/aznamespaces"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// namespace starts an Event Grid namespace with topic "keys" and
// subscription "rotator", and a real receiver for it.
func namespace(t *testing.T, inProcess bool, so eventgrid.SubscriptionOptions) (
	*eventgrid.NamespaceTopic, *eventgrid.Subscription, *aznamespaces.ReceiverClient, *eventgrid.Server) {
	t.Helper()
	srv, err := eventgrid.Start(eventgrid.Options{InProcess: inProcess})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	topic := srv.AddNamespaceTopic("keys")
	sub := topic.AddSubscription("rotator", so)

	co := azcore.ClientOptions{Transport: srv.HTTPClient()}
	if inProcess {
		co.Transport = &http.Client{Transport: srv.InProcessTransport()}
	}
	r, err := aznamespaces.NewReceiverClientWithSharedKeyCredential(srv.URL(), "keys", "rotator",
		azcore.NewKeyCredential(eventgrid.DefaultKey), &aznamespaces.ReceiverClientOptions{ClientOptions: co})
	if err != nil {
		t.Fatal(err)
	}
	return topic, sub, r, srv
}

func cloudEvent(t *testing.T, ev any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func settledIDs(s []eventgrid.Settled) []string {
	var ids []string
	for _, e := range s {
		ids = append(ids, e.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestPull_SettlesPerOutcome receives four events and settles each by
// its outcome: a rotation that ended and an event for a key nobody
// subscribed are acknowledged, a rotation Resource Manager throttled is
// released for later, and an event that cannot be decoded is rejected.
func TestPull_SettlesPerOutcome(t *testing.T) {
	w := newKeysWorld(t)
	w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, PathSuffix: "/relay-3",
		Status: http.StatusTooManyRequests, RetryAfter: 2 * time.Minute})
	topic, sub, receiver, _ := namespace(t, false, eventgrid.SubscriptionOptions{})

	rotates := w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.v3, "kv1")
	throttled := w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.o2, "kv1")
	stranger := w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.o2, "kv1")
	stranger.Data.ID = "https://elsewhere.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef"
	poison := json.RawMessage(`{"specversion":"1.0","id":"poison","source":"/x","type":"` +
		rotation.TypeKeyNewVersionCreated + `","data":{"Id":"https://kv1/secrets/not-a-key"}}`)
	if err := topic.Publish(cloudEvent(t, rotates), cloudEvent(t, throttled), cloudEvent(t, stranger), poison); err != nil {
		t.Fatal(err)
	}

	sum, err := azure.Pull(t.Context(), receiver, w.rotator(t, false), azure.PullOptions{Once: true, Logger: logcheck.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}

	want := azure.PullSummary{Receives: 1, Received: 4, Acknowledged: 2, Released: 1, Rejected: 1, Undecodable: 1}
	if diff := cmp.Diff(want, sum); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(sortedIDs(rotates.ID, stranger.ID), settledIDs(sub.Acknowledged())); diff != "" {
		t.Errorf("acknowledged (-want +got):\n%s", diff)
	}
	if dl := sub.DeadLetters(); len(dl) != 1 || dl[0].ID != "poison" || dl[0].Reason != eventgrid.ReasonRejected {
		t.Errorf("got dead letters %+v, want the poison event, rejected", dl)
	}
	waiting := sub.Events()
	if len(waiting) != 1 || waiting[0].ID != throttled.ID || waiting[0].State != eventgrid.StateDelayed {
		t.Errorf("got waiting %+v, want the throttled event released with a delay", waiting)
	}
	for _, id := range w.ids[:2] {
		if got, _ := w.emu.ServerKeyURL(id); got != w.v3.KID {
			t.Errorf("%s: got %s, want %s", id, got, w.v3.KID)
		}
	}
}

// TestPull_DryRunConsumesNothing: a dry run decides, PATCHes nothing and
// gives every event back at once, undecodable ones too.
func TestPull_DryRunConsumesNothing(t *testing.T) {
	w := newKeysWorld(t)
	topic, sub, receiver, _ := namespace(t, false, eventgrid.SubscriptionOptions{})
	rotates := w.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, w.v3, "kv1")
	poison := json.RawMessage(`{"specversion":"1.0","id":"poison","source":"/x","type":"` +
		rotation.TypeKeyNewVersionCreated + `","data":{"Id":"https://kv1/secrets/not-a-key"}}`)
	if err := topic.Publish(cloudEvent(t, rotates), poison); err != nil {
		t.Fatal(err)
	}
	w.emu.ResetRequests()

	var results []rotation.EventResult
	sum, err := azure.Pull(t.Context(), receiver, w.rotator(t, true), azure.PullOptions{DryRun: true,
		Results: func(rs []rotation.EventResult) { results = append(results, rs...) },
		Logger:  logcheck.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}

	want := azure.PullSummary{Receives: 1, Received: 2, Released: 2, Undecodable: 1}
	if diff := cmp.Diff(want, sum); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	if len(results) != 1 || results[0].Report == nil || !results[0].Report.DryRun {
		t.Errorf("got results %+v, want one dry-run report", results)
	}
	if got := sub.Acknowledged(); len(got) != 0 {
		t.Errorf("got acknowledged %+v, want none", got)
	}
	if got := sub.DeadLetters(); len(got) != 0 {
		t.Errorf("got dead letters %+v, want none", got)
	}
	if got := sub.Events(); len(got) != 2 || got[0].State != eventgrid.StateAvailable || got[1].State != eventgrid.StateAvailable {
		t.Errorf("got waiting %+v, want both events available again", got)
	}
	for _, r := range w.emu.Requests() {
		if r.Service == "arm" && r.Method != http.MethodGet {
			t.Errorf("dry run wrote: %s %s", r.Method, r.Path)
		}
	}
}

// newKeysWorld is the dead-letter world without Azurite.
func newKeysWorld(t *testing.T) *deadLetterWorld {
	t.Helper()
	return newWorld(t, false)
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

// TestPull_RenewsLocksDuringASlowRotation holds the PATCH for two and a
// half minutes, longer than the 60 s lock: the locks are renewed, the
// event is acknowledged after its first delivery, and it is never
// delivered twice.
func TestPull_RenewsLocksDuringASlowRotation(t *testing.T) {
	for _, renew := range []time.Duration{20 * time.Second, 0} {
		name := "renewing every " + renew.String()
		if renew == 0 {
			name = "renewing less often than the lock lasts"
			renew = 5 * time.Minute
		}
		t.Run(name, func(t *testing.T) {
			f := setup(t, 1)
			v2 := f.newVersion(t)
			f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Latency: 150 * time.Second, Times: 1})

			synctest.Test(t, func(t *testing.T) {
				topic, sub, receiver, srv := namespace(t, true, eventgrid.SubscriptionOptions{LockDuration: time.Minute})
				ev := f.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, v2, "kv1")
				if err := topic.Publish(cloudEvent(t, ev)); err != nil {
					t.Fatal(err)
				}
				r := f.rotatorOver(t, transporter(f), func(c *rotation.Config) { c.Deadline = 5 * time.Minute })

				sum, err := azure.Pull(t.Context(), receiver, r, azure.PullOptions{Once: true, RenewEvery: renew, Logger: logcheck.Logger(t)})
				if err != nil {
					t.Fatal(err)
				}

				if got, _ := f.emu.ServerKeyURL(f.ids[0]); got != v2.KID {
					t.Errorf("got %s, want %s", got, v2.KID)
				}
				renewals := 0
				for _, req := range srv.Requests() {
					if req.Operation == eventgrid.OpRenewLock && req.Status == http.StatusOK {
						renewals++
					}
				}
				acked := sub.Acknowledged()
				if renew < time.Minute {
					if renewals < 7 || sum.Renewals != renewals {
						t.Errorf("got %d renewals (summary %d), want one every 20 s of 150 s", renewals, sum.Renewals)
					}
					if len(acked) != 1 || acked[0].DeliveryCount != 1 || sum.LostLocks != 0 {
						t.Errorf("got acknowledged %+v, %d lost locks; want the event, on its first delivery", acked, sum.LostLocks)
					}
					return
				}
				// Without renewal the lock expires mid-rotation: the
				// acknowledgement is refused and Event Grid keeps the
				// event for another delivery (which finds the server
				// current).
				if len(acked) != 0 || sum.LostLocks != 1 || len(sub.Events()) != 1 {
					t.Errorf("got %d acknowledged, %d lost locks, %d waiting; want 0, 1, 1",
						len(acked), sum.LostLocks, len(sub.Events()))
				}
			})
		})
	}
}

// TestPull_SettlementFailureDoesNotStopThePull: Event Grid answers 503
// to a settlement. The pull logs it, counts the events unsettled and
// goes on; the lock expires and the next pull settles the event.
func TestPull_SettlementFailureDoesNotStopThePull(t *testing.T) {
	tests := []struct {
		op     eventgrid.Operation
		poison bool
	}{
		{op: eventgrid.OpAcknowledge},
		{op: eventgrid.OpReject, poison: true},
	}
	for _, tt := range tests {
		t.Run(string(tt.op), func(t *testing.T) {
			f := setup(t, 1)
			v2 := f.newVersion(t)

			synctest.Test(t, func(t *testing.T) {
				topic, sub, receiver, srv := namespace(t, true, eventgrid.SubscriptionOptions{LockDuration: time.Minute})
				ev := cloudEvent(t, f.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, v2, "kv1"))
				if tt.poison {
					ev = json.RawMessage(`{"specversion":"1.0","id":"poison","source":"/x","type":"` +
						rotation.TypeKeyNewVersionCreated + `","data":{"Id":"https://kv1/secrets/not-a-key"}}`)
				}
				if err := topic.Publish(ev); err != nil {
					t.Fatal(err)
				}
				r := f.rotatorOver(t, transporter(f), nil)
				remove := srv.InjectFault(eventgrid.Fault{Operation: tt.op, Status: http.StatusServiceUnavailable})
				var logs bytes.Buffer
				log := slog.New(slog.NewTextHandler(logcheck.Writer(t, &logs), nil))

				sum, err := azure.Pull(t.Context(), receiver, r, azure.PullOptions{Once: true, Logger: log})
				if err != nil {
					t.Fatalf("got %v, want the pull to go on", err)
				}
				if sum.Unsettled != 1 || sum.Acknowledged+sum.Rejected != 0 {
					t.Errorf("got %d unsettled, %d acknowledged, %d rejected; want 1, 0, 0",
						sum.Unsettled, sum.Acknowledged, sum.Rejected)
				}
				if !strings.Contains(logs.String(), "level=WARN msg=\"settlement failed") {
					t.Errorf("got logs\n%s\nwant a warning for the failed settlement", logs.String())
				}

				remove()
				time.Sleep(2 * time.Minute) // the lock expires
				sum, err = azure.Pull(t.Context(), receiver, r, azure.PullOptions{Once: true, Logger: log})
				if err != nil {
					t.Fatal(err)
				}
				if sum.Acknowledged+sum.Rejected != 1 || sum.Unsettled != 0 {
					t.Errorf("got summary %+v, want the redelivered event settled", sum)
				}
				settledNow := len(sub.Acknowledged()) + len(sub.DeadLetters())
				if settledNow != 1 {
					t.Errorf("got %d events settled, want 1", settledNow)
				}
			})
		})
	}
}

// TestPull_RefusedReceive: a receive refused for want of permission is
// retried, for a role assignment takes minutes to apply, with an error
// naming the role; with Once it is given up after a few tries, as
// retryable.
func TestPull_RefusedReceive(t *testing.T) {
	receives := func(srv *eventgrid.Server) int {
		n := 0
		for _, r := range srv.Requests() {
			if r.Operation == eventgrid.OpReceive {
				n++
			}
		}
		return n
	}

	t.Run("retried until allowed", func(t *testing.T) {
		f := setup(t, 1)
		v2 := f.newVersion(t)
		synctest.Test(t, func(t *testing.T) {
			topic, sub, receiver, srv := namespace(t, true, eventgrid.SubscriptionOptions{})
			srv.InjectFault(eventgrid.Fault{Operation: eventgrid.OpReceive, Status: http.StatusForbidden, Times: 3})
			if err := topic.Publish(cloudEvent(t, f.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, v2, "kv1"))); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()

			sum, err := azure.Pull(ctx, receiver, f.rotatorOver(t, transporter(f), nil), azure.PullOptions{
				Logger: slog.New(slog.NewTextHandler(logcheck.Writer(t, &logs), nil)),
				Progress: func(s azure.PullSummary) {
					if s.Acknowledged > 0 {
						cancel()
					}
				}})

			if err != nil || sum.Acknowledged != 1 || len(sub.Acknowledged()) != 1 {
				t.Errorf("got %+v, %v; want the event acknowledged once the receive was allowed", sum, err)
			}
			const want = `level=ERROR msg="receive refused: the identity needs the EventGrid Data Receiver role on the namespace topic subscription`
			if n := strings.Count(logs.String(), want); n != 3 || !strings.Contains(logs.String(), "retry_in=") ||
				!strings.Contains(logs.String(), "next_retry=") {
				t.Errorf("got logs\n%s\nwant %q three times, with retry_in and next_retry", logs.String(), want)
			}
		})
	})

	for _, tt := range []struct {
		name   string
		key    string
		status int
		want   string
	}{
		{"once gives up on 403", eventgrid.DefaultKey, http.StatusForbidden, "EventGrid Data Receiver role"},
		{"once gives up on a wrong key", "d3Jvbmc=", 0, "the credential was refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 1)
			synctest.Test(t, func(t *testing.T) {
				srv, err := eventgrid.Start(eventgrid.Options{InProcess: true})
				if err != nil {
					t.Fatal(err)
				}
				defer srv.Close()
				srv.AddNamespaceTopic("keys").AddSubscription("rotator", eventgrid.SubscriptionOptions{})
				if tt.status != 0 {
					srv.InjectFault(eventgrid.Fault{Operation: eventgrid.OpReceive, Status: tt.status})
				}
				receiver, err := aznamespaces.NewReceiverClientWithSharedKeyCredential(srv.URL(), "keys", "rotator",
					azcore.NewKeyCredential(tt.key), &aznamespaces.ReceiverClientOptions{
						ClientOptions: azcore.ClientOptions{Transport: &http.Client{Transport: srv.InProcessTransport()}}})
				if err != nil {
					t.Fatal(err)
				}

				_, err = azure.Pull(t.Context(), receiver, f.rotatorOver(t, transporter(f), nil),
					azure.PullOptions{Once: true, Logger: logcheck.Logger(t)})

				if !errors.Is(err, rotation.ErrRetryable) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("got %v, want a retryable error saying %q", err, tt.want)
				}
				if n := receives(srv); n != 3 {
					t.Errorf("got %d receives, want 3 before giving up", n)
				}
			})
		})
	}
}
