package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// Republish sends saved events (a JSON array or one object, as a
// dead-letter blob holds them) to an Event Grid custom topic, so that
// they go through the normal delivery path again. Events in the Event
// Grid schema are sent with PublishEvents, without the dead-letter
// metadata and without "topic", which Event Grid sets itself and refuses
// when it names another resource; CloudEvents are sent with
// PublishCloudEvents. It returns how many events were sent; on an error
// the events of earlier requests were sent and the rest were not.
func Republish(ctx context.Context, c *azeventgrid.Client, data []byte) (int, error) {
	grid, cloud, err := splitSchemas(data)
	if err != nil {
		return 0, err
	}
	sent := 0
	for _, b := range batches(len(grid), func(i int) int { return grid[i].size }) {
		events := make([]azeventgrid.Event, 0, b[1]-b[0])
		for _, e := range grid[b[0]:b[1]] {
			events = append(events, e.grid)
		}
		if _, err := c.PublishEvents(ctx, events, nil); err != nil {
			return sent, classify("publish events", err)
		}
		sent += len(events)
	}
	for _, b := range batches(len(cloud), func(i int) int { return cloud[i].size }) {
		events := make([]messaging.CloudEvent, 0, b[1]-b[0])
		for _, e := range cloud[b[0]:b[1]] {
			events = append(events, e.cloud)
		}
		if _, err := c.PublishCloudEvents(ctx, events, nil); err != nil {
			return sent, classify("publish cloud events", err)
		}
		sent += len(events)
	}
	return sent, nil
}

type outgoing struct {
	grid  azeventgrid.Event
	cloud messaging.CloudEvent
	size  int
}

// splitSchemas decodes saved events into the two schemas.
func splitSchemas(data []byte) (grid, cloud []outgoing, err error) {
	data = bytes.TrimSpace(data)
	var raws []json.RawMessage
	if len(data) > 0 && data[0] == '{' {
		raws = []json.RawMessage{data}
	} else if err := json.Unmarshal(data, &raws); err != nil {
		return nil, nil, fmt.Errorf("decode saved events: want a JSON object or array: %w", err)
	}
	var errs []error
	for i, raw := range raws {
		m, err := lowerFields(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("event %d: %w", i, err))
			continue
		}
		for _, k := range deadLetterFields {
			delete(m, k)
		}
		if _, ok := m["specversion"]; ok {
			ce, err := cloudEventOf(m)
			if err != nil {
				errs = append(errs, fmt.Errorf("event %d: %w", i, err))
				continue
			}
			cloud = append(cloud, outgoing{cloud: ce, size: len(raw)})
			continue
		}
		ge, err := gridEventOf(m)
		if err != nil {
			errs = append(errs, fmt.Errorf("event %d: %w", i, err))
			continue
		}
		grid = append(grid, outgoing{grid: ge, size: len(raw)})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("decode saved events: %w", err)
	}
	return grid, cloud, nil
}

// lowerFields decodes an object with its member names in lower case.
func lowerFields(raw json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errors.New("want a JSON object")
	}
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[strings.ToLower(strings.TrimSpace(k))] = v
	}
	return out, nil
}

func gridEventOf(m map[string]json.RawMessage) (azeventgrid.Event, error) {
	var e azeventgrid.Event
	for _, f := range []struct {
		name string
		dst  **string
	}{{"id", &e.ID}, {"eventtype", &e.EventType}, {"subject", &e.Subject}, {"dataversion", &e.DataVersion}} {
		var s string
		if raw, ok := m[f.name]; ok {
			if err := json.Unmarshal(raw, &s); err != nil {
				return e, fmt.Errorf("%s: want a string", f.name)
			}
		}
		*f.dst = &s
	}
	if *e.ID == "" || *e.EventType == "" {
		return e, errors.New("want an Event Grid event with id and eventType")
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
// Event Grid custom topic through c and marks each blob done (outcome
// OutcomeRepublished) once Event Grid accepted all of its events. A blob
// that cannot be decoded is left unmarked. opts.Since, DryRun (nothing
// sent, nothing marked), Again, Progress and Logger apply as for Replay.
func (d *DeadLetters) Republish(ctx context.Context, c *azeventgrid.Client, opts ReplayOptions) (ReplaySummary, error) {
	var sum ReplaySummary
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
		res := BlobResult{Name: b.Name, Events: []rotation.EventResult{}}
		n, err := d.republishBlob(ctx, c, b, opts.DryRun)
		sum.Events += n
		switch {
		case err != nil:
			sum.Unfinished++
			res.Error = err.Error()
			errs = append(errs, err)
		default:
			sum.Replayed++
			res.Outcome, res.Marked = OutcomeRepublished, !opts.DryRun
		}
		sum.Results = append(sum.Results, res)
		if opts.Progress != nil {
			opts.Progress(sum)
		}
	}
	return sum, errors.Join(errs...)
}

func (d *DeadLetters) republishBlob(ctx context.Context, c *azeventgrid.Client, b DeadLetterBlob, dryRun bool) (int, error) {
	data, err := d.Read(ctx, b)
	if err != nil {
		return 0, err
	}
	if dryRun {
		grid, cloud, err := splitSchemas(data)
		if err != nil {
			return 0, fmt.Errorf("blob %s: %w", b.Name, err)
		}
		return len(grid) + len(cloud), nil
	}
	n, err := Republish(ctx, c, data)
	if err != nil {
		return n, fmt.Errorf("blob %s: %w", b.Name, err)
	}
	return n, d.MarkDone(ctx, b, Mark{Time: time.Now(), Outcome: OutcomeRepublished, Events: n})
}
