package azure_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
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
	res, err := azure.Republish(t.Context(), publisher(t, srv, grid), data, nil)
	if err != nil || res.Sent != 2 || res.Schema != rotation.SchemaEventGrid {
		t.Fatalf("got %+v, %v; want 2 Event Grid events sent", res, err)
	}
	ces := []json.RawMessage{w.cloudEvent(t, w.o2)}
	data, _ = json.Marshal(ces)
	if res, err := azure.Republish(t.Context(), publisher(t, srv, cloud), data, nil); err != nil || res.Sent != 1 {
		t.Fatalf("got %+v, %v; want 1 sent", res, err)
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

// TestRepublish_MixedSchemasSendNothing: a topic takes one schema, so
// events of both are refused before any is sent, and none is sent twice
// by the reruns that would follow.
func TestRepublish_MixedSchemasSendNothing(t *testing.T) {
	w := newKeysWorld(t)
	srv := startEventGrid(t)
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})
	data, _ := json.Marshal([]json.RawMessage{w.gridEvent(t, w.v3), w.cloudEvent(t, w.v3)})

	res, err := azure.Republish(t.Context(), publisher(t, srv, topic), data, nil)

	if err == nil || !strings.Contains(err.Error(), "events of both schemas (1 Event Grid, 1 CloudEvents), but a topic takes one") || res.Sent != 0 {
		t.Errorf("got %+v, %v; want nothing sent and an error saying a topic takes one schema", res, err)
	}
	if n := len(topic.Events()); n != 0 {
		t.Errorf("got %d events on the topic, want none", n)
	}
}

// TestRepublish_SchemaRefused: a topic of the other schema refuses the
// first request; the error says nothing was sent.
func TestRepublish_SchemaRefused(t *testing.T) {
	w := newKeysWorld(t)
	srv := startEventGrid(t)
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})
	data, _ := json.Marshal([]json.RawMessage{w.cloudEvent(t, w.v3), w.cloudEvent(t, w.o2)})

	res, err := azure.Republish(t.Context(), publisher(t, srv, topic), data, nil)

	const want = "publish CloudEvents: none of 2 sent"
	if err == nil || !strings.Contains(err.Error(), want) || res.Sent != 0 {
		t.Errorf("got %+v, %v; want an error saying %q", res, err, want)
	}
}

// TestRepublish_EnvelopeAsEventGridWantsIt: Event Grid requires a
// subject, which Key Vault's data names as ObjectName, and stamps an
// empty dataVersion when there is none. An event that has neither
// subject nor ObjectName, or no eventType, is left out; the rest go.
func TestRepublish_EnvelopeAsEventGridWantsIt(t *testing.T) {
	w := newKeysWorld(t)
	srv := startEventGrid(t)
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})
	edit := func(raw json.RawMessage, f func(map[string]any)) json.RawMessage {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	noSubject := edit(w.gridEvent(t, w.v3), func(m map[string]any) { delete(m, "subject"); delete(m, "dataVersion") })
	nothingToName := edit(w.gridEvent(t, w.v2), func(m map[string]any) {
		delete(m, "subject")
		delete(m["data"].(map[string]any), "ObjectName")
		m["id"] = "no-name"
	})
	noType := edit(w.gridEvent(t, w.o2), func(m map[string]any) { delete(m, "eventType"); m["id"] = "no-type" })
	data, _ := json.Marshal([]json.RawMessage{noSubject, nothingToName, noType})

	res, err := azure.Republish(t.Context(), publisher(t, srv, topic), data, nil)

	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, u := range res.Undecodable {
		bad = append(bad, fmt.Sprintf("%d %s", u.Index, u.ID))
	}
	if res.Events != 3 || res.Sent != 1 || !slices.Equal(bad, []string{"1 no-name", "2 no-type"}) {
		t.Errorf("got %d events, %d sent, undecodable %v; want 3, 1, [1 no-name 2 no-type]", res.Events, res.Sent, bad)
	}
	got := topic.Events()
	if len(got) != 1 {
		t.Fatalf("got %d events on the topic, want 1", len(got))
	}
	if got[0].Subject != "cmk" {
		t.Errorf("got subject %q, want the key's name, cmk, from data.ObjectName", got[0].Subject)
	}
	var sent map[string]any
	if err := json.Unmarshal(got[0].Raw, &sent); err != nil {
		t.Fatal(err)
	}
	if v, ok := sent["dataVersion"]; !ok || v != "" {
		t.Errorf("got dataVersion %v (present %v), want it sent empty", v, ok)
	}
}

func startEventGrid(t *testing.T) *eventgrid.Server {
	t.Helper()
	srv, err := eventgrid.Start(eventgrid.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func TestRepublishDeadLetters(t *testing.T) {
	w := newDeadLetterWorld(t)
	const (
		a = "RELAY-SUB/2024/5/1/7/a.json"
		b = "RELAY-SUB/2024/5/1/8/b.json"
		c = "RELAY-SUB/2024/5/1/9/c.json"
	)
	w.upload(t, a, w.gridEvent(t, w.v3), w.gridEvent(t, w.o2))
	w.upload(t, b, w.gridEvent(t, w.v2))
	w.uploadRaw(t, c, "not json")
	srv := startEventGrid(t)
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})
	pub := publisher(t, srv, topic)
	d := w.store(t, "deadletters")

	sum, err := d.Republish(t.Context(), pub, azure.ReplayOptions{Logger: logcheck.Logger(t)})
	if err != nil || sum.Replayed != 3 || sum.Unfinished != 0 || sum.Events != 3 || sum.Sent != 3 || sum.Poison != 1 {
		t.Errorf("got %d republished, %d unfinished, %d events, %d sent, %d poison, %v; want 3, 0, 3, 3, 1, nil",
			sum.Replayed, sum.Unfinished, sum.Events, sum.Sent, sum.Poison, err)
	}
	want := map[string]string{a: azure.OutcomeRepublished, b: azure.OutcomeRepublished, c: azure.OutcomeUndecodable}
	if diff := cmp.Diff(want, w.outcomes(t, d)); diff != "" {
		t.Errorf("blob outcomes (-want +got):\n%s", diff)
	}
	if n := len(topic.Events()); n != 3 {
		t.Errorf("got %d events on the topic, want 3", n)
	}

	sum, _ = d.Republish(t.Context(), pub, azure.ReplayOptions{Logger: logcheck.Logger(t)})
	if sum.Done != 3 || len(topic.Events()) != 3 {
		t.Errorf("second run: got %d done and %d events on the topic, want 3 and still 3", sum.Done, len(topic.Events()))
	}
}

// TestRepublishDeadLetters_UndecodableEvent: a blob with an event Event
// Grid would refuse has its other events sent and is marked undecodable
// with the counts, as a replay marks it, so that no run sends it again.
func TestRepublishDeadLetters_UndecodableEvent(t *testing.T) {
	w := newDeadLetterWorld(t)
	const name = "RELAY-SUB/2024/5/1/7/a.json"
	w.upload(t, name, w.gridEvent(t, w.v3), json.RawMessage(`{"id":"no-type","subject":"cmk","data":{}}`), w.gridEvent(t, w.o2))
	srv := startEventGrid(t)
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})
	pub := publisher(t, srv, topic)
	d := w.store(t, "deadletters")

	for run := 1; run <= 2; run++ {
		sum, err := d.Republish(t.Context(), pub, azure.ReplayOptions{Logger: logcheck.Logger(t)})
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if n := len(topic.Events()); n != 2 {
			t.Errorf("run %d: got %d events on the topic, want the 2 that can be sent, once", run, n)
		}
		if run == 1 && (sum.Replayed != 1 || sum.Poison != 1 || !sum.Results[0].Marked) {
			t.Errorf("run 1: got %+v, want the blob marked with one poison event", sum)
		}
		if run == 2 && sum.Done != 1 {
			t.Errorf("run 2: got %d done, want 1", sum.Done)
		}
	}
	blobs, err := d.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range []string{azure.MetaOutcome, azure.MetaEvents, azure.MetaPoison} {
		got[k] = blobs[0].Meta(k)
	}
	want := map[string]string{azure.MetaOutcome: azure.OutcomeUndecodable, azure.MetaEvents: "3", azure.MetaPoison: "1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mark (-want +got):\n%s", diff)
	}
}

// TestRepublishDeadLetters_Refused: a blob the topic refuses is left
// unmarked, with nothing of it sent, and the error says so.
func TestRepublishDeadLetters_Refused(t *testing.T) {
	w := newDeadLetterWorld(t)
	w.upload(t, "RELAY-SUB/2024/5/1/7/a.json", w.cloudEvent(t, w.v3))
	srv := startEventGrid(t)
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})
	d := w.store(t, "deadletters")

	sum, err := d.Republish(t.Context(), publisher(t, srv, topic), azure.ReplayOptions{Logger: logcheck.Logger(t)})

	if err == nil || !strings.Contains(err.Error(), "none of 1 sent") || sum.Unfinished != 1 || sum.Results[0].Marked {
		t.Errorf("got %+v, %v; want the blob unfinished, unmarked, and an error saying none was sent", sum, err)
	}
}

// An event naming one member twice, in two casings with different values,
// could mean either: it is left out and listed, and the others are sent.
func TestRepublish_AmbiguousEventLeftOut(t *testing.T) {
	w := newKeysWorld(t)
	srv, err := eventgrid.Start(eventgrid.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	topic := srv.AddTopic("recovery", eventgrid.TopicOptions{})

	var ambiguous map[string]any
	if err := json.Unmarshal(w.gridEvent(t, w.v2), &ambiguous); err != nil {
		t.Fatal(err)
	}
	ambiguous["Subject"] = "cmk-old" // beside "subject": "cmk"
	odd, _ := json.Marshal(ambiguous)
	data, _ := json.Marshal([]json.RawMessage{odd, w.gridEvent(t, w.v3)})

	for range 20 { // a map's order must not decide
		res, err := azure.Republish(t.Context(), publisher(t, srv, topic), data, &azure.RepublishOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != 1 || len(res.Undecodable) != 1 || res.Undecodable[0].Index != 0 ||
			!strings.Contains(res.Undecodable[0].Reason, `"Subject"`) {
			t.Fatalf("got %+v, want the first event left out for its two subjects and the second sent", res)
		}
	}
}
