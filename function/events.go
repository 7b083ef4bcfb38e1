package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// eventFile is a file of saved events, one event object or an array of
// them, decoded one event at a time so that an undecodable event costs
// only itself, as POST /api/replay does.
type eventFile struct {
	size   int              // events in the file
	events []rotation.Event // those that decoded, in order
	at     []int            // the file index of each of events
	bad    []badEvent
}

// badEvent is an event of a file that did not decode.
type badEvent struct {
	index int
	id    string // the envelope's id, when it has one
	typ   string // the envelope's event type, when it has one
	err   error
}

// ignoredUndecodable prefixes the Ignored reason of an undecodable
// event, as in the answer of POST /api/replay.
const ignoredUndecodable = "undecodable: "

// splitEvents decodes each event of data. It fails only when data is not
// a JSON object or array; events that do not decode are kept in bad.
func splitEvents(data []byte) (eventFile, error) {
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return eventFile{}, fmt.Errorf("not JSON: %w", err)
	}
	var raws []json.RawMessage
	switch raw[0] {
	case '{':
		raws = []json.RawMessage{raw}
	case '[':
		if err := json.Unmarshal(raw, &raws); err != nil {
			return eventFile{}, err
		}
	default:
		return eventFile{}, errors.New("want a JSON object or an array of them")
	}
	f := eventFile{size: len(raws)}
	for i, r := range raws {
		e, err := rotation.DecodeEvent(r)
		if err != nil {
			id, typ := envelopeNames(r)
			f.bad = append(f.bad, badEvent{index: i, id: id, typ: typ, err: err})
			continue
		}
		f.events = append(f.events, e)
		f.at = append(f.at, i)
	}
	return f, nil
}

// results places the results of f.events, in order, and one result per
// undecodable event at its index in the file.
func (f eventFile) results(decoded []rotation.EventResult) []rotation.EventResult {
	out := make([]rotation.EventResult, f.size)
	for i, r := range decoded {
		out[f.at[i]] = r
	}
	for _, e := range f.bad {
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
