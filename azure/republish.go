package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// Event Grid refuses a publish request over 1 MB; batches stay well under.
const maxPublishBatch = 512 << 10

// deadLetterFields are the delivery metadata Event Grid adds when it
// dead-letters an event; they are not part of the event and are dropped
// before it is sent again.
var deadLetterFields = []string{"deadletterreason", "deliveryattempts", "lastdeliveryoutcome",
	"publishtime", "lastdeliveryattempttime", "metadataversion", "topic"}

// ErrNotEvents means saved data is not a JSON object or an array of
// them: there is no event to send.
var ErrNotEvents = errors.New("want a JSON object or an array of events")

// ErrMixedSchemas means saved events are of both schemas, which no one
// topic takes; none of them was sent.
var ErrMixedSchemas = errors.New("events of both schemas")

// RepublishOptions configures Republish. Nil is the zero value.
type RepublishOptions struct {
	DryRun bool         // decode and count, send nothing
	Logger *slog.Logger // nil: discard
}

// RepublishResult is what Republish did with saved events.
type RepublishResult struct {
	Events int    `json:"events"`           // in the data
	Schema string `json:"schema,omitempty"` // of those that can be sent: rotation.SchemaEventGrid or SchemaCloudEvents
	Sent   int    `json:"sent"`             // accepted by Event Grid; in a dry run, those that would be sent

	// Undecodable are the events not sent because Event Grid would
	// refuse them (not an object, no id, no type, no subject, a time
	// that does not parse); the others are sent without them.
	Undecodable []UnsentEvent `json:"undecodable"`
}

// UnsentEvent is a saved event Republish leaves out.
type UnsentEvent struct {
	Index  int    `json:"index"` // its place in the data
	ID     string `json:"id,omitempty"`
	Reason string `json:"reason"`
}

// Republish sends saved events (a JSON array or one object, as a
// dead-letter blob holds them) to an Event Grid custom topic, so that
// they go through the normal delivery path again. Events in the Event
// Grid schema are sent with PublishEvents, without the dead-letter
// metadata and without "topic", which Event Grid sets itself and refuses
// when it names another resource; CloudEvents are sent with
// PublishCloudEvents.
//
// A topic takes one schema, so events of both are refused before any is
// sent. Events that Event Grid would refuse are left out and listed in
// the result; the others are sent in requests under Event Grid's size
// limit. On an error from Event Grid the events of earlier requests were
// sent and the rest were not (the error says how many): sending them
// again is harmless, for a rotation repeats as a no-op.
func Republish(ctx context.Context, c *azeventgrid.Client, data []byte, opts *RepublishOptions) (RepublishResult, error) {
	var o RepublishOptions
	if opts != nil {
		o = *opts
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	saved, err := decodeSaved(data)
	res := saved.result()
	if err != nil {
		return res, err
	}
	for _, u := range res.Undecodable {
		log.ErrorContext(ctx, "saved event not sent: Event Grid would refuse it", "index", u.Index,
			"event_id", u.ID, "err", u.Reason)
	}
	if o.DryRun {
		res.Sent = len(saved.out)
		return res, nil
	}
	total := len(saved.out)
	for _, b := range batches(total, func(i int) int { return saved.out[i].size }) {
		part := saved.out[b[0]:b[1]]
		var err error
		if saved.schema == rotation.SchemaCloudEvents {
			events := make([]messaging.CloudEvent, 0, len(part))
			for _, e := range part {
				events = append(events, e.cloud)
			}
			_, err = c.PublishCloudEvents(ctx, events, nil)
		} else {
			events := make([]azeventgrid.Event, 0, len(part))
			for _, e := range part {
				events = append(events, e.grid)
			}
			_, err = c.PublishEvents(ctx, events, nil)
		}
		if err != nil {
			what := "Event Grid schema events"
			if saved.schema == rotation.SchemaCloudEvents {
				what = "CloudEvents"
			}
			op := fmt.Sprintf("publish %s: none of %d sent", what, total)
			if res.Sent > 0 {
				op = fmt.Sprintf("publish %s: %d of %d sent, the rest not", what, res.Sent, total)
			}
			return res, classify(op, err)
		}
		res.Sent += len(part)
		log.DebugContext(ctx, "events published", "schema", saved.schema, "events", len(part),
			"sent", res.Sent, "of", total)
	}
	return res, nil
}

// saved is saved events decoded for sending.
type saved struct {
	events int        // in the data
	schema string     // of out
	out    []outgoing // those that can be sent, in order
	bad    []UnsentEvent
}

func (s saved) result() RepublishResult {
	bad := s.bad
	if bad == nil {
		bad = []UnsentEvent{}
	}
	return RepublishResult{Events: s.events, Schema: s.schema, Undecodable: bad}
}

type outgoing struct {
	grid  azeventgrid.Event
	cloud messaging.CloudEvent
	size  int
}

// decodeSaved decodes saved events for sending, one event at a time so
// that an event Event Grid would refuse costs only itself. It fails when
// data holds no JSON object or array (ErrNotEvents), or events of both
// schemas.
func decodeSaved(data []byte) (saved, error) {
	data = bytes.TrimSpace(data)
	var raws []json.RawMessage
	if len(data) > 0 && data[0] == '{' {
		if !json.Valid(data) {
			return saved{}, fmt.Errorf("decode saved events: %w", ErrNotEvents)
		}
		raws = []json.RawMessage{data}
	} else if err := json.Unmarshal(data, &raws); err != nil {
		return saved{}, fmt.Errorf("decode saved events: %w: %w", ErrNotEvents, err)
	}
	s := saved{events: len(raws)}
	var grid, cloud []outgoing
	for i, raw := range raws {
		m, err := rotation.Fields(raw)
		if err == nil {
			for _, k := range deadLetterFields {
				delete(m, k)
			}
			if _, ok := m["specversion"]; ok {
				var ce messaging.CloudEvent
				if ce, err = cloudEventOf(m); err == nil {
					cloud = append(cloud, outgoing{cloud: ce, size: len(raw)})
					continue
				}
			} else {
				var ge azeventgrid.Event
				if ge, err = gridEventOf(m); err == nil {
					grid = append(grid, outgoing{grid: ge, size: len(raw)})
					continue
				}
			}
		}
		s.bad = append(s.bad, UnsentEvent{Index: i, ID: envelopeID(raw), Reason: err.Error()})
	}
	switch {
	case len(grid) > 0 && len(cloud) > 0:
		return s, fmt.Errorf("decode saved events: %w (%d Event Grid, %d CloudEvents), but a topic takes one: "+
			"nothing sent; republish each schema to a topic of its own", ErrMixedSchemas, len(grid), len(cloud))
	case len(cloud) > 0:
		s.schema, s.out = rotation.SchemaCloudEvents, cloud
	case len(grid) > 0:
		s.schema, s.out = rotation.SchemaEventGrid, grid
	}
	return s, nil
}

// envelopeID is an event's id, its member name in any case, when it has
// a string one.
func envelopeID(raw json.RawMessage) string {
	m, err := rotation.Fields(raw)
	if err != nil {
		return ""
	}
	var id string
	_ = json.Unmarshal(m["id"], &id)
	return id
}

// gridEventOf builds an event in the Event Grid schema. Event Grid
// requires id, eventType, subject and eventTime; dataVersion it stamps
// empty when missing, so a missing one is sent empty.
func gridEventOf(m map[string]json.RawMessage) (azeventgrid.Event, error) {
	var e azeventgrid.Event
	for _, f := range []struct {
		name string
		dst  **string
	}{{"id", &e.ID}, {"eventtype", &e.EventType}, {"subject", &e.Subject}, {"dataversion", &e.DataVersion}} {
		var s string
		if raw, ok := m[f.name]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &s); err != nil {
				return e, fmt.Errorf("%s: want a string", f.name)
			}
		}
		*f.dst = &s
	}
	if *e.ID == "" || *e.EventType == "" {
		return e, errors.New("want an Event Grid event with id and eventType")
	}
	if *e.Subject == "" {
		// Key Vault's subject is the object's name, which its data
		// repeats.
		name := objectName(m["data"])
		if name == "" {
			return e, errors.New("no subject, which Event Grid requires, and no data.ObjectName to take it from")
		}
		e.Subject = &name
	}
	t := time.Now().UTC()
	if raw, ok := m["eventtime"]; ok {
		if err := json.Unmarshal(raw, &t); err != nil {
			return e, fmt.Errorf("eventTime: %w", err)
		}
	}
	e.EventTime = &t
	e.Data = m["data"]
	if e.Data == nil {
		e.Data = json.RawMessage("null")
	}
	return e, nil
}

// objectName is the ObjectName member of Key Vault event data, matched
// in any case; "" when there is none.
func objectName(data json.RawMessage) string {
	m, err := rotation.Fields(data)
	if err != nil {
		return ""
	}
	var name string
	_ = json.Unmarshal(m["objectname"], &name)
	return strings.TrimSpace(name)
}

func cloudEventOf(m map[string]json.RawMessage) (messaging.CloudEvent, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return messaging.CloudEvent{}, err
	}
	var ce messaging.CloudEvent
	if err := json.Unmarshal(b, &ce); err != nil {
		return messaging.CloudEvent{}, fmt.Errorf("want a CloudEvent: %w", err)
	}
	// The SDK holds JSON data as bytes, which it would send base64
	// encoded; send it as JSON, as it came.
	if raw, ok := m["data"]; ok {
		ce.Data = raw
	}
	return ce, nil
}

// batches cuts n items into [from, to) ranges of at most maxPublishBatch
// bytes (an item larger than that goes alone).
func batches(n int, size func(int) int) [][2]int {
	var out [][2]int
	start, bytes := 0, 0
	for i := range n {
		if i > start && bytes+size(i) > maxPublishBatch {
			out = append(out, [2]int{start, i})
			start, bytes = i, 0
		}
		bytes += size(i)
	}
	if start < n {
		out = append(out, [2]int{start, n})
	}
	return out
}

// Republish sends the events of every unmarked dead-letter blob to an
// Event Grid custom topic through c and marks each blob done once Event
// Grid accepted the events of it that can be sent: OutcomeRepublished,
// or OutcomeUndecodable (with the counts) when some or all of its events
// could not be. A blob whose events Event Grid refused, in part or whole,
// is left unmarked, and a later run sends all of it again; so is a blob
// with events of both schemas, which no one topic takes (Event Grid
// writes one subscription's events, of one schema, to a blob).
// opts.Since, DryRun (nothing sent, nothing marked), Again, Progress and
// Logger apply as for Replay.
func (d *DeadLetters) Republish(ctx context.Context, c *azeventgrid.Client, opts ReplayOptions) (ReplaySummary, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sum := ReplaySummary{Results: []BlobResult{}}
	blobs, err := d.List(ctx)
	if err != nil {
		return sum, err
	}
	sum.Blobs = len(blobs)
	var errs []error
	for _, b := range blobs {
		if ctx.Err() != nil {
			return sum, errors.Join(append(errs, ctx.Err())...)
		}
		if opts.skips(b, &sum) {
			continue
		}
		res, sendable, err := d.republishBlob(ctx, c, b, opts.DryRun, log)
		sum.Events += sendable
		sum.Sent += res.Sent
		sum.Poison += res.Poison
		if err != nil {
			sum.Unfinished++
			errs = append(errs, err)
		} else {
			sum.Replayed++
		}
		sum.Results = append(sum.Results, res)
		if opts.Progress != nil {
			opts.Progress(sum)
		}
	}
	return sum, errors.Join(errs...)
}

// republishBlob sends one blob's events and marks it, and returns how
// many of its events can be sent; the error is one of reading, sending
// or marking, and is also in the result.
func (d *DeadLetters) republishBlob(ctx context.Context, c *azeventgrid.Client, b DeadLetterBlob,
	dryRun bool, log *slog.Logger) (BlobResult, int, error) {
	res := BlobResult{Name: b.Name, Events: []rotation.EventResult{}}
	data, err := d.Read(ctx, b)
	if err != nil {
		res.Error = err.Error()
		return res, 0, err
	}
	r, err := Republish(ctx, c, data, &RepublishOptions{DryRun: dryRun, Logger: log.With("blob", b.Name)})
	sendable := r.Events - len(r.Undecodable)
	res.Sent, res.Poison = r.Sent, len(r.Undecodable)
	m := Mark{Outcome: OutcomeRepublished, Events: r.Events, Poison: res.Poison}
	switch {
	case errors.Is(err, ErrNotEvents):
		// As Replay counts it: one undecodable event.
		m.Events, m.Poison, res.Poison = 1, 1, 1
	case err != nil:
		err = fmt.Errorf("republish dead-letter blob %s: %w", b.Name, err)
		res.Error = err.Error()
		return res, sendable, err
	}
	if m.Poison > 0 {
		m.Outcome = OutcomeUndecodable
		log.ErrorContext(ctx, "dead-letter blob holds events that cannot be sent", "blob", b.Name,
			"poison", m.Poison, "sent", res.Sent)
	}
	res.Outcome = m.Outcome
	if dryRun {
		return res, sendable, nil
	}
	m.Time = time.Now()
	if err := d.MarkDone(ctx, b, m); err != nil {
		res.Error = err.Error()
		return res, sendable, err
	}
	res.Marked = true
	log.InfoContext(ctx, "dead-letter blob republished", "blob", b.Name, "outcome", m.Outcome,
		"events", m.Events, "sent", res.Sent)
	return res, sendable, nil
}
