package handler

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// batch is a body of one event or an array of events, decoded one event
// at a time so that an undecodable event costs only itself.
type batch struct {
	size   int              // events in the body
	events []rotation.Event // those that decoded, in order
	at     []int            // the body index of each of events
	bad    []badEvent
}

// badEvent is an event of a batch that did not decode.
type badEvent struct {
	index int
	id    string // the envelope's id, when it has one
	typ   string // the envelope's event type, when it has one
	err   error
}

// ignoredUndecodable prefixes the Ignored reason of an undecodable event.
const ignoredUndecodable = "undecodable: "

// decodeBatch splits data, one event object or an array of them, and
// decodes each event. It fails only when data is not a JSON object or
// array; events that do not decode are kept in bad.
func decodeBatch(data []byte) (batch, error) {
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return batch{}, fmt.Errorf("decode events: %w", explainJSON(err))
	}
	var raws []json.RawMessage
	switch raw[0] {
	case '{':
		raws = []json.RawMessage{raw}
	case '[':
		if err := json.Unmarshal(raw, &raws); err != nil {
			return batch{}, fmt.Errorf("decode events: %w", explainJSON(err))
		}
	default:
		return batch{}, errors.New("decode events: want a JSON object or an array of them")
	}

	b := batch{size: len(raws)}
	for i, r := range raws {
		e, err := rotation.DecodeEvent(r)
		if err != nil {
			id, typ := envelopeNames(r)
			b.bad = append(b.bad, badEvent{index: i, id: id, typ: typ, err: err})
			continue
		}
		b.events = append(b.events, e)
		b.at = append(b.at, i)
	}
	return b, nil
}

// results places the results of b.events, as the rotator returned them,
// and one result per undecodable event at their indexes in the body.
func (b batch) results(decoded []rotation.EventResult) []rotation.EventResult {
	out := make([]rotation.EventResult, b.size)
	for i, r := range decoded {
		out[b.at[i]] = r
	}
	for _, e := range b.bad {
		out[e.index] = rotation.EventResult{EventID: e.id, Type: e.typ, Ignored: ignoredUndecodable + e.err.Error()}
	}
	return out
}

// envelopeNames returns an undecodable event's id and type as far as
// they can be read, matching member names in any case as the decoder
// does.
func envelopeNames(raw json.RawMessage) (id, typ string) {
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil {
		return "", ""
	}
	for k, v := range members {
		var s string
		if json.Unmarshal(v, &s) != nil {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "id":
			id = s
		case "eventtype", "type":
			typ = s
		}
	}
	return id, typ
}
