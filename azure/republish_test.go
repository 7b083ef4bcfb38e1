package azure_test

import (
	"encoding/json"
	"slices"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
	"github.com/cmkrotator/cmkrotator/rotation"
)

func publisher(t *testing.T, srv *eventgrid.Server, topic *eventgrid.Topic) *azeventgrid.Client {
	t.Helper()
	c, err := azeventgrid.NewClientWithSharedKeyCredential(topic.Endpoint(), azcore.NewKeyCredential(eventgrid.DefaultKey),
		&azeventgrid.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: srv.HTTPClient()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRepublish sends dead-lettered events back through custom topics
// with the real azeventgrid client, each schema to a topic of its
// schema, and lets the topic deliver them to the rotation as Event Grid
// would.
func TestRepublish(t *testing.T) {
	w := newKeysWorld(t)
	r := w.rotator(t, false)
	srv, err := eventgrid.Start(eventgrid.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	var mu sync.Mutex
	var delivered []rotation.EventResult
	deliver := func(ps []eventgrid.Published) {
		var events []rotation.Event
		for _, p := range ps {
			e, err := rotation.DecodeEvent(p.Delivered)
			if err != nil {
				t.Errorf("decode delivered event %s: %v", p.Delivered, err)
				continue
			}
			events = append(events, e)
		}
		res := r.HandleEvents(t.Context(), events)
		mu.Lock()
		delivered = append(delivered, res...)
		mu.Unlock()
	}
	grid := srv.AddTopic("recovery", eventgrid.TopicOptions{OnPublish: deliver})
	cloud := srv.AddTopic("recovery-ce", eventgrid.TopicOptions{Schema: eventgrid.SchemaCloudEvents, OnPublish: deliver})

	saved := []json.RawMessage{w.gridEvent(t, w.v3), w.gridEvent(t, w.v2)} // topic: the vault's system topic
	data, _ := json.Marshal(saved)
	n, err := azure.Republish(t.Context(), publisher(t, srv, grid), data)
	if err != nil || n != 2 {
		t.Fatalf("got %d sent, %v; want 2, nil", n, err)
	}
	ces := []json.RawMessage{w.cloudEvent(t, w.o2)}
	data, _ = json.Marshal(ces)
	if n, err := azure.Republish(t.Context(), publisher(t, srv, cloud), data); err != nil || n != 1 {
		t.Fatalf("got %d sent, %v; want 1, nil", n, err)
	}

	for _, p := range grid.Events() {
		var m map[string]any
		if err := json.Unmarshal(p.Raw, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"topic", "deadLetterReason", "deliveryAttempts", "publishTime"} {
			if _, ok := m[k]; ok {
				t.Errorf("event %s: sent with %q, want it dropped", p.ID, k)
			}
		}
	}
	var want []string
	for _, raw := range saved {
		e, _ := rotation.DecodeEvent(raw)
		want = append(want, e.ID)
	}
	got := func(ps []eventgrid.Published) []string {
		var ids []string
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
		return ids
	}
	if g := got(grid.Events()); !slices.Equal(g, want) {
		t.Errorf("got %v on the topic, want %v (ids kept, so duplicates stay recognisable)", g, want)
	}
	if g := got(cloud.Events()); len(g) != 1 || cloud.Events()[0].Schema != eventgrid.SchemaCloudEvents {
		t.Errorf("got %v on the CloudEvents topic, want the one CloudEvent", g)
	}
	for _, id := range w.ids[:2] {
		if url, _ := w.emu.ServerKeyURL(id); url != w.v3.KID {
			t.Errorf("%s: got %s, want %s", id, url, w.v3.KID)
		}
	}
	if url, _ := w.emu.ServerKeyURL(w.ids[2]); url != w.o2.KID {
		t.Errorf("%s: got %s, want %s", w.ids[2], url, w.o2.KID)
	}
	if len(delivered) != 3 {
		t.Errorf("got %d events delivered onward, want 3", len(delivered))
	}
}

func TestRepublish_MixedSchemasToOneTopicFails(t *testing.T) {
	w := newKeysWorld(t)
	srv, err := eventgrid.Start(eventgrid.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})
	data, _ := json.Marshal([]json.RawMessage{w.gridEvent(t, w.v3), w.cloudEvent(t, w.v3)})

	n, err := azure.Republish(t.Context(), publisher(t, srv, topic), data)

	if err == nil || n != 1 {
		t.Errorf("got %d sent, %v; want the Event Grid event sent and the CloudEvent refused", n, err)
	}
}

func TestRepublishDeadLetters(t *testing.T) {
	w := newDeadLetterWorld(t)
	w.upload(t, "RELAY-SUB/2024/5/1/7/a.json", w.gridEvent(t, w.v3), w.gridEvent(t, w.o2))
	w.upload(t, "RELAY-SUB/2024/5/1/8/b.json", w.gridEvent(t, w.v2))
	w.uploadRaw(t, "RELAY-SUB/2024/5/1/9/c.json", "not json")
	srv, err := eventgrid.Start(eventgrid.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})
	c := publisher(t, srv, topic)
	d := w.store(t, "deadletters")

	sum, err := d.Republish(t.Context(), c, azure.ReplayOptions{})
	if err == nil || sum.Replayed != 2 || sum.Unfinished != 1 || sum.Events != 3 {
		t.Errorf("got %d republished, %d unfinished, %d events, %v; want 2, 1, 3 and an error naming c.json",
			sum.Replayed, sum.Unfinished, sum.Events, err)
	}
	if n := len(topic.Events()); n != 3 {
		t.Errorf("got %d events on the topic, want 3", n)
	}

	sum, _ = d.Republish(t.Context(), c, azure.ReplayOptions{})
	if sum.Done != 2 || len(topic.Events()) != 3 {
		t.Errorf("second run: got %d done and %d events on the topic, want 2 and still 3", sum.Done, len(topic.Events()))
	}
}
