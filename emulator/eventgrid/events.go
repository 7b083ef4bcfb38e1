package eventgrid

import (
	"encoding/json"
	"fmt"
	"mime"
	"strings"
	"time"
)

// Schema is the shape of a published event.
type Schema string

// The two schemas Event Grid takes.
const (
	SchemaEventGrid   Schema = "EventGrid"
	SchemaCloudEvents Schema = "CloudEvents"
)

// Published is one event the server accepted.
type Published struct {
	Topic   string
	Schema  Schema
	ID      string
	Type    string    // eventType or type
	Subject string    // may be empty for CloudEvents
	Source  string    // CloudEvents source; empty for the Event Grid schema
	Time    time.Time // eventTime or time; zero when absent
	Data    json.RawMessage

	// Raw is the event object as the client sent it. Delivered is
	// the event as Event Grid hands it on: for the Event Grid schema
	// with topic and metadataVersion stamped, otherwise as Raw.
	Raw       json.RawMessage
	Delivered json.RawMessage

	Received time.Time
}

// The content types the SDK clients send.
const (
	ctCloudEvent      = "application/cloudevents+json"
	ctCloudEventBatch = "application/cloudevents-batch+json"
	ctJSON            = "application/json"
)

func mediaType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(contentType))
	}
	return mt
}

// splitEvents returns the event objects of a body holding one object
// (single) or an array of them.
func splitEvents(body []byte, single bool) ([]json.RawMessage, error) {
	if single {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("%w: the body is not a JSON object", errBadEvent)
		}
		return []json.RawMessage{body}, nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(body, &arr); err != nil {
		return nil, fmt.Errorf("%w: the body is not a JSON array of events", errBadEvent)
	}
	return arr, nil
}

// parseEvents parses raws with parse, each stamped with topic and one
// receive time. It stops at the first event that does not parse and
// returns its index with the error.
func parseEvents(raws []json.RawMessage, topic string,
	parse func(json.RawMessage) (Published, error)) ([]Published, int, error) {
	events := make([]Published, 0, len(raws))
	now := time.Now()
	for i, raw := range raws {
		p, err := parse(raw)
		if err != nil {
			return nil, i, err
		}
		p.Topic, p.Received = topic, now
		events = append(events, p)
	}
	return events, 0, nil
}

// parseCloudEvent validates one CloudEvents 1.0 event in JSON format.
func parseCloudEvent(raw json.RawMessage) (Published, error) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil || f == nil {
		return Published{}, fmt.Errorf("%w: an event is not a JSON object", errBadEvent)
	}
	p := Published{Schema: SchemaCloudEvents, Raw: raw, Delivered: raw}

	for _, req := range []struct {
		name string
		dst  *string
	}{{"id", &p.ID}, {"source", &p.Source}, {"type", &p.Type}} {
		if err := requireString(f, req.name, req.dst); err != nil {
			return Published{}, err
		}
	}
	var spec string
	if err := requireString(f, "specversion", &spec); err != nil {
		return Published{}, err
	}
	if spec != "1.0" {
		return Published{}, fmt.Errorf("%w: `specversion` must be \"1.0\", got %q", errBadEvent, spec)
	}
	optionalString(f, "subject", &p.Subject)

	if err := optionalTime(f, "time", &p.Time); err != nil {
		return Published{}, err
	}
	p.Data = f["data"]
	if p.Data == nil {
		p.Data = f["data_base64"]
	}
	return p, nil
}

// parseGridEvent validates one Event Grid schema event. A topic in the
// event must name the resource it is published to.
func parseGridEvent(raw json.RawMessage, resourceID string) (Published, error) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil || f == nil {
		return Published{}, fmt.Errorf("%w: an event is not a JSON object", errBadEvent)
	}
	p := Published{Schema: SchemaEventGrid, Raw: raw, Data: f["data"]}

	for _, req := range []struct {
		name string
		dst  *string
	}{{"id", &p.ID}, {"subject", &p.Subject}, {"eventType", &p.Type}} {
		if err := requireString(f, req.name, req.dst); err != nil {
			return Published{}, fmt.Errorf("%w: required property '%s' was not set", errBadEvent, req.name)
		}
	}
	if _, ok := f["eventTime"]; !ok {
		return Published{}, fmt.Errorf("%w: required property 'eventTime' was not set", errBadEvent)
	}
	if err := optionalTime(f, "eventTime", &p.Time); err != nil {
		return Published{}, err
	}

	var topic, meta string
	optionalString(f, "topic", &topic)
	if topic != "" && !strings.EqualFold(topic, resourceID) {
		return Published{}, fmt.Errorf("%w: the topic %q in event %q does not match the topic "+
			"this request was published to", errBadEvent, topic, p.ID)
	}
	optionalString(f, "metadataVersion", &meta)
	if meta != "" && meta != "1" {
		return Published{}, fmt.Errorf("%w: metadataVersion %q is not supported", errBadEvent, meta)
	}

	f["topic"], _ = json.Marshal(resourceID)
	f["metadataVersion"] = json.RawMessage(`"1"`)
	if _, ok := f["dataVersion"]; !ok {
		f["dataVersion"] = json.RawMessage(`""`)
	}
	delivered, err := json.Marshal(f)
	if err != nil {
		return Published{}, fmt.Errorf("%w: %v", errBadEvent, err)
	}
	p.Delivered = delivered
	return p, nil
}

func requireString(f map[string]json.RawMessage, name string, dst *string) error {
	var v string
	if err := json.Unmarshal(f[name], &v); err != nil || v == "" {
		return fmt.Errorf("%w: `%s` must be non-empty string", errBadEvent, name)
	}
	*dst = v
	return nil
}

func optionalString(f map[string]json.RawMessage, name string, dst *string) {
	_ = json.Unmarshal(f[name], dst)
}

func optionalTime(f map[string]json.RawMessage, name string, dst *time.Time) error {
	raw, ok := f[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("%w: `%s` must be an RFC 3339 time string", errBadEvent, name)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("%w: `%s` must be an RFC 3339 time string", errBadEvent, name)
	}
	*dst = t
	return nil
}

// badEventMessage is what the client sees for a validation error.
func badEventMessage(err error) string {
	return strings.TrimPrefix(err.Error(), errBadEvent.Error()+": ")
}
