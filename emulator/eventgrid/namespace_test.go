package eventgrid_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/aznamespaces"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
)

const (
	topicName = "keys"
	subName   = "rotator"
)

// start starts a server that is closed when the test ends.
func start(t *testing.T, opts eventgrid.Options) *eventgrid.Server {
	t.Helper()
	srv, err := eventgrid.Start(opts)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// clientOptions reaches srv over its socket, or in process when it
// has no socket. Retries are off unless retries is set.
func clientOptions(srv *eventgrid.Server, inProcess, retries bool) azcore.ClientOptions {
	o := azcore.ClientOptions{Transport: srv.HTTPClient()}
	if inProcess {
		o.Transport = &http.Client{Transport: srv.InProcessTransport()}
	}
	if !retries {
		o.Retry = policy.RetryOptions{MaxRetries: -1}
	}
	return o
}

type namespaceFixture struct {
	srv      *eventgrid.Server
	sub      *eventgrid.Subscription
	sender   *aznamespaces.SenderClient
	receiver *aznamespaces.ReceiverClient
}

func newNamespace(t *testing.T, inProcess bool, so eventgrid.SubscriptionOptions) namespaceFixture {
	t.Helper()
	srv := start(t, eventgrid.Options{InProcess: inProcess})
	sub := srv.AddNamespaceTopic(topicName).AddSubscription(subName, so)
	return namespaceFixture{srv: srv, sub: sub,
		sender:   newSender(t, srv, topicName, eventgrid.DefaultKey, inProcess, false),
		receiver: newReceiver(t, srv, topicName, subName, eventgrid.DefaultKey, inProcess),
	}
}

func newSender(t *testing.T, srv *eventgrid.Server, topic, key string,
	inProcess, retries bool) *aznamespaces.SenderClient {
	t.Helper()
	c, err := aznamespaces.NewSenderClientWithSharedKeyCredential(srv.URL(), topic,
		azcore.NewKeyCredential(key),
		&aznamespaces.SenderClientOptions{ClientOptions: clientOptions(srv, inProcess, retries)})
	if err != nil {
		t.Fatalf("new sender: %v", err)
	}
	return c
}

func newReceiver(t *testing.T, srv *eventgrid.Server, topic, sub, key string,
	inProcess bool) *aznamespaces.ReceiverClient {
	t.Helper()
	c, err := aznamespaces.NewReceiverClientWithSharedKeyCredential(srv.URL(), topic, sub,
		azcore.NewKeyCredential(key),
		&aznamespaces.ReceiverClientOptions{ClientOptions: clientOptions(srv, inProcess, false)})
	if err != nil {
		t.Fatalf("new receiver: %v", err)
	}
	return c
}

func cloudEvent(t *testing.T, id string) *messaging.CloudEvent {
	t.Helper()
	ce, err := messaging.NewCloudEvent("/vaults/v1", "Microsoft.KeyVault.KeyNewVersionCreated",
		map[string]string{"Id": id}, nil)
	if err != nil {
		t.Fatalf("new cloud event: %v", err)
	}
	ce.ID = id
	return &ce
}

func send(t *testing.T, f namespaceFixture, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := f.sender.SendEvent(context.Background(), cloudEvent(t, id), nil); err != nil {
			t.Fatalf("send event %s: %v", id, err)
		}
	}
}

func receive(t *testing.T, f namespaceFixture, max int32) []aznamespaces.ReceiveDetails {
	t.Helper()
	resp, err := f.receiver.ReceiveEvents(context.Background(),
		&aznamespaces.ReceiveEventsOptions{MaxEvents: to.Ptr(max), MaxWaitTime: to.Ptr[int32](10)})
	if err != nil {
		t.Fatalf("receive events: %v", err)
	}
	return resp.Details
}

func tokens(details []aznamespaces.ReceiveDetails) []string {
	var out []string
	for _, d := range details {
		out = append(out, *d.BrokerProperties.LockToken)
	}
	return out
}

func ids(details []aznamespaces.ReceiveDetails) []string {
	var out []string
	for _, d := range details {
		out = append(out, d.Event.ID)
	}
	return out
}

func settledIDs(s []eventgrid.Settled) []string {
	var out []string
	for _, e := range s {
		out = append(out, e.ID)
	}
	return out
}

// failed summarises failed lock tokens as token → "code: message".
func failed(flts []aznamespaces.FailedLockToken) map[string]string {
	out := map[string]string{}
	for _, f := range flts {
		out[*f.LockToken] = *f.Error.Code + ": " + f.Error.Error()
	}
	return out
}

// wantResponseError fails the test unless err is an *azcore.ResponseError
// with status and code.
func wantResponseError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("got error %v, want *azcore.ResponseError", err)
	}
	if re.StatusCode != status || re.ErrorCode != code {
		t.Errorf("got %d %q, want %d %q", re.StatusCode, re.ErrorCode, status, code)
	}
}

func TestPublishReceiveAcknowledge(t *testing.T) {
	f := newNamespace(t, false, eventgrid.SubscriptionOptions{})
	ctx := context.Background()

	send(t, f, "e1")
	if _, err := f.sender.SendEvents(ctx, []*messaging.CloudEvent{cloudEvent(t, "e2"), cloudEvent(t, "e3")}, nil); err != nil {
		t.Fatalf("send events: %v", err)
	}

	got := receive(t, f, 10)
	if diff := cmp.Diff([]string{"e1", "e2", "e3"}, ids(got)); diff != "" {
		t.Fatalf("received ids (-want +got):\n%s", diff)
	}
	for _, d := range got {
		if *d.BrokerProperties.DeliveryCount != 1 {
			t.Errorf("event %s: got delivery count %d, want 1", d.Event.ID, *d.BrokerProperties.DeliveryCount)
		}
		if want := `{"Id":"` + d.Event.ID + `"}`; string(d.Event.Data.([]byte)) != want {
			t.Errorf("event %s: got data %s, want %s", d.Event.ID, d.Event.Data, want)
		}
		if d.Event.Type != "Microsoft.KeyVault.KeyNewVersionCreated" || d.Event.Source != "/vaults/v1" {
			t.Errorf("event %s: got type %q source %q", d.Event.ID, d.Event.Type, d.Event.Source)
		}
	}

	ack, err := f.receiver.AcknowledgeEvents(ctx, tokens(got), nil)
	if err != nil {
		t.Fatalf("acknowledge: %v", err)
	}
	if diff := cmp.Diff(tokens(got), ack.SucceededLockTokens); diff != "" || len(ack.FailedLockTokens) != 0 {
		t.Errorf("acknowledge: succeeded diff (-want +got):\n%s\nfailed: %v", diff, failed(ack.FailedLockTokens))
	}
	if diff := cmp.Diff([]string{"e1", "e2", "e3"}, settledIDs(f.sub.Acknowledged())); diff != "" {
		t.Errorf("acknowledged (-want +got):\n%s", diff)
	}
	if n := len(f.sub.Events()); n != 0 {
		t.Errorf("got %d events waiting, want 0", n)
	}
	if n := len(f.srv.NamespaceTopic(topicName).Published()); n != 3 {
		t.Errorf("got %d published events, want 3", n)
	}
}

func TestSettleAfterSettleFailsPerToken(t *testing.T) {
	f := newNamespace(t, false, eventgrid.SubscriptionOptions{})
	ctx := context.Background()
	send(t, f, "done", "live")
	got := receive(t, f, 2)
	done, live := *got[0].BrokerProperties.LockToken, *got[1].BrokerProperties.LockToken

	if _, err := f.receiver.AcknowledgeEvents(ctx, []string{done}, nil); err != nil {
		t.Fatalf("acknowledge: %v", err)
	}

	const lost = "TokenLost: Token has expired."
	calls := []struct {
		name string
		call func([]string) ([]string, []aznamespaces.FailedLockToken, error)
	}{
		{"renew", func(tt []string) ([]string, []aznamespaces.FailedLockToken, error) {
			r, err := f.receiver.RenewEventLocks(ctx, tt, nil)
			return r.SucceededLockTokens, r.FailedLockTokens, err
		}},
		{"release", func(tt []string) ([]string, []aznamespaces.FailedLockToken, error) {
			r, err := f.receiver.ReleaseEvents(ctx, tt, nil)
			return r.SucceededLockTokens, r.FailedLockTokens, err
		}},
		{"reject", func(tt []string) ([]string, []aznamespaces.FailedLockToken, error) {
			r, err := f.receiver.RejectEvents(ctx, tt, nil)
			return r.SucceededLockTokens, r.FailedLockTokens, err
		}},
		{"acknowledge", func(tt []string) ([]string, []aznamespaces.FailedLockToken, error) {
			r, err := f.receiver.AcknowledgeEvents(ctx, tt, nil)
			return r.SucceededLockTokens, r.FailedLockTokens, err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			ok, bad, err := c.call([]string{done, "no-such-token"})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if len(ok) != 0 {
				t.Errorf("got succeeded %v, want none", ok)
			}
			want := map[string]string{done: lost, "no-such-token": lost}
			if diff := cmp.Diff(want, failed(bad)); diff != "" {
				t.Errorf("failed tokens (-want +got):\n%s", diff)
			}
		})
	}

	// A batch mixing a live token with a settled one fails only the
	// settled one.
	resp, err := f.receiver.AcknowledgeEvents(ctx, []string{done, live}, nil)
	if err != nil {
		t.Fatalf("acknowledge: %v", err)
	}
	if diff := cmp.Diff([]string{live}, resp.SucceededLockTokens); diff != "" {
		t.Errorf("succeeded (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{done: lost}, failed(resp.FailedLockTokens)); diff != "" {
		t.Errorf("failed (-want +got):\n%s", diff)
	}
}

func TestSettleOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		settle    func(*aznamespaces.ReceiverClient, string) error
		wantState []eventgrid.EventState // ID, State, DeliveryCount only
		wantAcked []string
		wantDead  []eventgrid.Settled // ID, Reason, DeliveryCount only
	}{{
		name: "acknowledge",
		settle: func(r *aznamespaces.ReceiverClient, tok string) error {
			_, err := r.AcknowledgeEvents(context.Background(), []string{tok}, nil)
			return err
		},
		wantAcked: []string{"e1"},
	}, {
		name: "reject",
		settle: func(r *aznamespaces.ReceiverClient, tok string) error {
			_, err := r.RejectEvents(context.Background(), []string{tok}, nil)
			return err
		},
		wantDead: []eventgrid.Settled{{ID: "e1", Reason: eventgrid.ReasonRejected, DeliveryCount: 1}},
	}, {
		name: "release",
		settle: func(r *aznamespaces.ReceiverClient, tok string) error {
			_, err := r.ReleaseEvents(context.Background(), []string{tok}, nil)
			return err
		},
		wantState: []eventgrid.EventState{{ID: "e1", State: eventgrid.StateAvailable, DeliveryCount: 1}},
	}, {
		name: "release with delay",
		settle: func(r *aznamespaces.ReceiverClient, tok string) error {
			_, err := r.ReleaseEvents(context.Background(), []string{tok},
				&aznamespaces.ReleaseEventsOptions{ReleaseDelayInSeconds: to.Ptr(aznamespaces.ReleaseDelayOneHour)})
			return err
		},
		wantState: []eventgrid.EventState{{ID: "e1", State: eventgrid.StateDelayed, DeliveryCount: 1}},
	}, {
		name: "renew",
		settle: func(r *aznamespaces.ReceiverClient, tok string) error {
			_, err := r.RenewEventLocks(context.Background(), []string{tok}, nil)
			return err
		},
		wantState: []eventgrid.EventState{{ID: "e1", State: eventgrid.StateLocked, DeliveryCount: 1}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newNamespace(t, false, eventgrid.SubscriptionOptions{})
			send(t, f, "e1")
			got := receive(t, f, 1)
			if err := tt.settle(f.receiver, tokens(got)[0]); err != nil {
				t.Fatalf("settle: %v", err)
			}

			var state []eventgrid.EventState
			for _, e := range f.sub.Events() {
				state = append(state, eventgrid.EventState{ID: e.ID, State: e.State, DeliveryCount: e.DeliveryCount})
			}
			if diff := cmp.Diff(tt.wantState, state); diff != "" {
				t.Errorf("waiting events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAcked, settledIDs(f.sub.Acknowledged())); diff != "" {
				t.Errorf("acknowledged (-want +got):\n%s", diff)
			}
			var dead []eventgrid.Settled
			for _, d := range f.sub.DeadLetters() {
				if d.ID == "e1" && !strings.Contains(string(d.Event), `"id":"e1"`) {
					t.Errorf("dead letter event: got %s, want the event as published", d.Event)
				}
				dead = append(dead, eventgrid.Settled{ID: d.ID, Reason: d.Reason, DeliveryCount: d.DeliveryCount})
			}
			if diff := cmp.Diff(tt.wantDead, dead); diff != "" {
				t.Errorf("dead letters (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReleaseIncrementsDeliveryCount(t *testing.T) {
	f := newNamespace(t, false, eventgrid.SubscriptionOptions{})
	send(t, f, "e1")
	for want := int32(1); want <= 3; want++ {
		got := receive(t, f, 1)
		if len(got) != 1 {
			t.Fatalf("receive %d: got %d events, want 1", want, len(got))
		}
		if n := *got[0].BrokerProperties.DeliveryCount; n != want {
			t.Errorf("receive %d: got delivery count %d, want %d", want, n, want)
		}
		resp, err := f.receiver.ReleaseEvents(context.Background(), tokens(got), nil)
		if err != nil || len(resp.FailedLockTokens) != 0 {
			t.Fatalf("release: %v %v", err, failed(resp.FailedLockTokens))
		}
	}
}

func TestLockExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newNamespace(t, true, eventgrid.SubscriptionOptions{LockDuration: time.Minute})
		send(t, f, "e1")
		first := receive(t, f, 1)
		if n := len(receive(t, f, 1)); n != 0 { // waits its 10 s
			t.Errorf("receive while locked: got %d events, want 0", n)
		}

		time.Sleep(50 * time.Second)

		state := f.sub.Events()
		if len(state) != 1 || state[0].State != eventgrid.StateAvailable {
			t.Fatalf("after lock expiry: got %+v, want e1 available", state)
		}
		resp, err := f.receiver.AcknowledgeEvents(context.Background(), tokens(first), nil)
		if err != nil {
			t.Fatalf("acknowledge: %v", err)
		}
		if diff := cmp.Diff(map[string]string{tokens(first)[0]: "TokenLost: Token has expired."},
			failed(resp.FailedLockTokens)); diff != "" {
			t.Errorf("acknowledge after expiry (-want +got):\n%s", diff)
		}

		second := receive(t, f, 1)
		if len(second) != 1 || *second[0].BrokerProperties.DeliveryCount != 2 {
			t.Fatalf("receive after expiry: got %d events, want e1 with delivery count 2", len(second))
		}
		if tokens(second)[0] == tokens(first)[0] {
			t.Errorf("got the expired lock token again, want a fresh one")
		}
	})
}

func TestRenewKeepsLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newNamespace(t, true, eventgrid.SubscriptionOptions{LockDuration: time.Minute})
		ctx := context.Background()
		send(t, f, "e1")
		got := receive(t, f, 1)

		for range 3 {
			time.Sleep(45 * time.Second)
			resp, err := f.receiver.RenewEventLocks(ctx, tokens(got), nil)
			if err != nil || len(resp.SucceededLockTokens) != 1 {
				t.Fatalf("renew: %v, failed %v", err, failed(resp.FailedLockTokens))
			}
		}
		if st := f.sub.Events(); st[0].LockedUntil != time.Now().Add(time.Minute) {
			t.Errorf("got locked until %v, want %v", st[0].LockedUntil, time.Now().Add(time.Minute))
		}
		resp, err := f.receiver.AcknowledgeEvents(ctx, tokens(got), nil)
		if err != nil || len(resp.SucceededLockTokens) != 1 {
			t.Fatalf("acknowledge after renewals: %v, failed %v", err, failed(resp.FailedLockTokens))
		}
	})
}

func TestReceiveWaits(t *testing.T) {
	tests := []struct {
		name        string
		publishAt   time.Duration // < 0: never
		maxWait     int32
		wantElapsed time.Duration
		wantEvents  int
	}{
		{"empty after max wait", -1, 10, 10 * time.Second, 0},
		{"default max wait", -1, 0, 60 * time.Second, 0},
		{"early on publish", 3 * time.Second, 30, 3 * time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newNamespace(t, true, eventgrid.SubscriptionOptions{})
				if tt.publishAt >= 0 {
					go func() {
						time.Sleep(tt.publishAt)
						send(t, f, "late")
					}()
				}
				opts := &aznamespaces.ReceiveEventsOptions{MaxEvents: to.Ptr[int32](5)}
				if tt.maxWait > 0 {
					opts.MaxWaitTime = to.Ptr(tt.maxWait)
				}

				begin := time.Now()
				resp, err := f.receiver.ReceiveEvents(context.Background(), opts)
				if err != nil {
					t.Fatalf("receive: %v", err)
				}
				if elapsed := time.Since(begin); elapsed != tt.wantElapsed {
					t.Errorf("got receive after %v, want %v", elapsed, tt.wantElapsed)
				}
				if len(resp.Details) != tt.wantEvents {
					t.Errorf("got %d events, want %d", len(resp.Details), tt.wantEvents)
				}
				synctest.Wait()
			})
		})
	}
}

func TestReleaseDelayAndExpiryWakeReceive(t *testing.T) {
	tests := []struct {
		name   string
		settle func(*aznamespaces.ReceiverClient, []string)
		want   time.Duration
	}{{
		name: "release after ten seconds",
		settle: func(r *aznamespaces.ReceiverClient, tt []string) {
			_, err := r.ReleaseEvents(context.Background(), tt,
				&aznamespaces.ReleaseEventsOptions{ReleaseDelayInSeconds: to.Ptr(aznamespaces.ReleaseDelayTenSeconds)})
			if err != nil {
				panic(err)
			}
		},
		want: 10 * time.Second,
	}, {
		name:   "lock expires",
		settle: func(*aznamespaces.ReceiverClient, []string) {},
		want:   60 * time.Second,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newNamespace(t, true, eventgrid.SubscriptionOptions{})
				send(t, f, "e1")
				tt.settle(f.receiver, tokens(receive(t, f, 1)))

				begin := time.Now()
				resp, err := f.receiver.ReceiveEvents(context.Background(),
					&aznamespaces.ReceiveEventsOptions{MaxWaitTime: to.Ptr[int32](120)})
				if err != nil {
					t.Fatalf("receive: %v", err)
				}
				if elapsed := time.Since(begin); elapsed != tt.want {
					t.Errorf("got event after %v, want %v", elapsed, tt.want)
				}
				if len(resp.Details) != 1 || *resp.Details[0].BrokerProperties.DeliveryCount != 2 {
					t.Errorf("got %d events, want e1 with delivery count 2", len(resp.Details))
				}
			})
		})
	}
}

func TestMaxDeliveryCount(t *testing.T) {
	tests := []struct {
		name string
		let  func(f namespaceFixture, tok []string) // how a delivery ends
	}{{
		name: "released",
		let: func(f namespaceFixture, tok []string) {
			if _, err := f.receiver.ReleaseEvents(context.Background(), tok, nil); err != nil {
				panic(err)
			}
		},
	}, {
		name: "lock expired",
		let:  func(namespaceFixture, []string) { time.Sleep(time.Minute) },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newNamespace(t, true, eventgrid.SubscriptionOptions{MaxDeliveryCount: 2})
				send(t, f, "e1")
				for range 2 {
					got := receive(t, f, 1)
					if len(got) != 1 {
						t.Fatalf("got %d events, want 1", len(got))
					}
					tt.let(f, tokens(got))
				}

				dead := f.sub.DeadLetters()
				if len(dead) != 1 || dead[0].Reason != eventgrid.ReasonMaxDeliveryCountExceeded || dead[0].DeliveryCount != 2 {
					t.Fatalf("got dead letters %+v, want e1 after 2 deliveries", dead)
				}
				if n := len(f.sub.Events()); n != 0 {
					t.Errorf("got %d events waiting, want 0", n)
				}
			})
		})
	}
}

func TestNamespaceErrors(t *testing.T) {
	srv := start(t, eventgrid.Options{})
	srv.AddNamespaceTopic(topicName).AddSubscription(subName, eventgrid.SubscriptionOptions{})
	ctx := context.Background()

	badEvent := cloudEvent(t, "x")
	badEvent.ID = ""
	tests := []struct {
		name       string
		call       func() error
		wantStatus int
		wantCode   string
	}{
		{"wrong key", func() error {
			_, err := newSender(t, srv, topicName, "wrong", false, false).SendEvent(ctx, cloudEvent(t, "e"), nil)
			return err
		}, http.StatusUnauthorized, "Unauthorized"},
		{"unknown topic", func() error {
			_, err := newSender(t, srv, "nope", eventgrid.DefaultKey, false, false).SendEvent(ctx, cloudEvent(t, "e"), nil)
			return err
		}, http.StatusNotFound, "NotFound"},
		{"unknown subscription", func() error {
			_, err := newReceiver(t, srv, topicName, "nope", eventgrid.DefaultKey, false).ReceiveEvents(ctx, nil)
			return err
		}, http.StatusNotFound, "NotFound"},
		{"event without id", func() error {
			_, err := newSender(t, srv, topicName, eventgrid.DefaultKey, false, false).SendEvent(ctx, badEvent, nil)
			return err
		}, http.StatusBadRequest, "BadRequest"},
		{"too many events asked", func() error {
			_, err := newReceiver(t, srv, topicName, subName, eventgrid.DefaultKey, false).ReceiveEvents(ctx,
				&aznamespaces.ReceiveEventsOptions{MaxEvents: to.Ptr[int32](101)})
			return err
		}, http.StatusBadRequest, "BadRequest"},
		{"wait too short", func() error {
			_, err := newReceiver(t, srv, topicName, subName, eventgrid.DefaultKey, false).ReceiveEvents(ctx,
				&aznamespaces.ReceiveEventsOptions{MaxWaitTime: to.Ptr[int32](5)})
			return err
		}, http.StatusBadRequest, "BadRequest"},
		{"odd release delay", func() error {
			_, err := newReceiver(t, srv, topicName, subName, eventgrid.DefaultKey, false).ReleaseEvents(ctx,
				[]string{"t"}, &aznamespaces.ReleaseEventsOptions{ReleaseDelayInSeconds: to.Ptr(aznamespaces.ReleaseDelay("7"))})
			return err
		}, http.StatusBadRequest, "BadRequest"},
		{"no lock tokens", func() error {
			_, err := newReceiver(t, srv, topicName, subName, eventgrid.DefaultKey, false).AcknowledgeEvents(ctx, []string{}, nil)
			return err
		}, http.StatusBadRequest, "BadRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantResponseError(t, tt.call(), tt.wantStatus, tt.wantCode)
		})
	}
}

func TestFaultRetriedByClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, eventgrid.Options{InProcess: true})
		srv.AddNamespaceTopic(topicName).AddSubscription(subName, eventgrid.SubscriptionOptions{})
		srv.InjectFault(eventgrid.Fault{Operation: eventgrid.OpPublish, Status: http.StatusServiceUnavailable,
			RetryAfter: 7 * time.Second, Times: 2})
		sender := newSender(t, srv, topicName, eventgrid.DefaultKey, true, true)

		begin := time.Now()
		if _, err := sender.SendEvent(context.Background(), cloudEvent(t, "e1"), nil); err != nil {
			t.Fatalf("send after faults: %v", err)
		}
		if elapsed := time.Since(begin); elapsed != 14*time.Second {
			t.Errorf("got send after %v, want 14s (two Retry-After waits)", elapsed)
		}
		var statuses []int
		for _, r := range srv.Requests() {
			statuses = append(statuses, r.Status)
		}
		if diff := cmp.Diff([]int{503, 503, 200}, statuses); diff != "" {
			t.Errorf("statuses (-want +got):\n%s", diff)
		}
	})
}

func TestFaultMatching(t *testing.T) {
	f := newNamespace(t, false, eventgrid.SubscriptionOptions{})
	remove := f.srv.InjectFault(eventgrid.Fault{Operation: eventgrid.OpReceive, Topic: topicName,
		Status: http.StatusTooManyRequests, Code: "Throttled", RetryAfter: time.Second})

	send(t, f, "e1") // a publish does not match
	_, err := f.receiver.ReceiveEvents(context.Background(), nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests || re.ErrorCode != "Throttled" {
		t.Fatalf("got %v, want 429 Throttled", err)
	}
	if got := re.RawResponse.Header.Get("Retry-After"); got != "1" {
		t.Errorf("got Retry-After %q, want 1", got)
	}

	remove()
	if n := len(receive(t, f, 1)); n != 1 {
		t.Errorf("after removing the fault: got %d events, want 1", n)
	}
}

func TestRequestsRecorded(t *testing.T) {
	f := newNamespace(t, false, eventgrid.SubscriptionOptions{})
	send(t, f, "e1")
	got := receive(t, f, 1)
	if _, err := f.receiver.AcknowledgeEvents(context.Background(), tokens(got), nil); err != nil {
		t.Fatalf("acknowledge: %v", err)
	}

	type summary struct {
		Op             eventgrid.Operation
		Topic, Sub     string
		Auth           string
		Status         int
		HasKeyInRecord bool
	}
	var sums []summary
	for _, r := range f.srv.Requests() {
		sums = append(sums, summary{r.Operation, r.Topic, r.Subscription, r.Auth, r.Status,
			strings.Contains(string(r.Body), eventgrid.DefaultKey)})
	}
	want := []summary{
		{eventgrid.OpPublish, topicName, "", eventgrid.AuthKey, 200, false},
		{eventgrid.OpReceive, topicName, subName, eventgrid.AuthKey, 200, false},
		{eventgrid.OpAcknowledge, topicName, subName, eventgrid.AuthKey, 200, false},
	}
	if diff := cmp.Diff(want, sums); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}

	f.srv.ResetRequests()
	if n := len(f.srv.Requests()); n != 0 {
		t.Errorf("after reset: got %d requests, want 0", n)
	}
}

func TestInProcessTransportRefusesOtherHosts(t *testing.T) {
	srv := start(t, eventgrid.Options{InProcess: true})
	req, err := http.NewRequest(http.MethodPost, "https://127.0.0.1:9/topics/x:publish", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.InProcessTransport().RoundTrip(req); err == nil {
		t.Errorf("got no error for another host, want one")
	}
}

func TestCloseEndsWaitingReceive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newNamespace(t, true, eventgrid.SubscriptionOptions{})
		go func() {
			time.Sleep(2 * time.Second)
			_ = f.srv.Close()
		}()
		begin := time.Now()
		resp, err := f.receiver.ReceiveEvents(context.Background(), nil)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if elapsed := time.Since(begin); elapsed != 2*time.Second || len(resp.Details) != 0 {
			t.Errorf("got %d events after %v, want none after 2s", len(resp.Details), elapsed)
		}
	})
}
