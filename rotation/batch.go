package rotation

import (
	"encoding/json"
	"fmt"
)

// IgnoredUndecodable prefixes the Ignored reason of an event that could
// not be decoded.
const IgnoredUndecodable = "undecodable: "

// Batch is a body of one event or an array of events, decoded one event
// at a time so that an undecodable event costs only itself.
type Batch struct {
	Size   int        // events in the body
	Events []Event    // those that decoded, in order
	Bad    []BadEvent // those that did not
	at     []int      // the body index of each of Events
}

// BadEvent is an event of a Batch that did not decode.
type BadEvent struct {
	Index int    // its place in the body
	ID    string // the envelope's id, when it has one
	Type  string // the envelope's event type, when it has one
	Err   error
}

// wantBatch is the shape DecodeBatch's errors ask for.
const wantBatch = "a JSON object or an array of them"

// DecodeBatch splits data, one event object or an array of them, and
// decodes each event. It fails only when data is not a JSON object or
// array, saying what it is instead; events that do not decode are kept
// in Bad.
func DecodeBatch(data []byte) (Batch, error) {
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Batch{}, fmt.Errorf("decode events: %w", shapeOf(err, data, wantBatch))
	}
	var raws []json.RawMessage
	switch raw[0] {
	case '{':
		raws = []json.RawMessage{raw}
	case '[':
		if err := json.Unmarshal(raw, &raws); err != nil {
			return Batch{}, fmt.Errorf("decode events: %w", err)
		}
	default:
		return Batch{}, fmt.Errorf("decode events: want %s, got %s", wantBatch, jsonKind(raw))
	}

	b := Batch{Size: len(raws)}
	for i, r := range raws {
		e, err := DecodeEvent(r)
		if err != nil {
			id, typ := envelopeNames(r)
			b.Bad = append(b.Bad, BadEvent{Index: i, ID: id, Type: typ, Err: err})
			continue
		}
		b.Events = append(b.Events, e)
		b.at = append(b.at, i)
	}
	return b, nil
}

// Results places the results of b.Events, as HandleEvents returned them,
// and one Ignored result per undecodable event, at their indexes in the
// body.
func (b Batch) Results(decoded []EventResult) []EventResult {
	out := make([]EventResult, b.Size)
	for i, r := range decoded {
		out[b.at[i]] = r
	}
	for _, e := range b.Bad {
		out[e.Index] = EventResult{EventID: e.ID, Type: e.Type, Ignored: IgnoredUndecodable + e.Err.Error()}
	}
	return out
}

// envelopeNames returns an undecodable event's id and type as far as
// they can be read, matching member names as the decoder does; a name
// the event gives two different values stays unread.
func envelopeNames(raw json.RawMessage) (id, typ string) {
	env, _ := Fields(raw)
	first, second := "eventtype", "type"
	if _, ok := env["specversion"]; ok {
		first, second = second, first
	}
	typ = str(env[first])
	if typ == "" {
		typ = str(env[second])
	}
	return str(env["id"]), typ
}
