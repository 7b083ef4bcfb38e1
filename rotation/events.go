package rotation

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azsystemevents"
)

// Key Vault key event types. Only TypeKeyNewVersionCreated causes a
// rotation; the others are decoded so that they can be reported.
const (
	TypeKeyNewVersionCreated = azsystemevents.TypeKeyVaultKeyNewVersionCreated
	TypeKeyNearExpiry        = azsystemevents.TypeKeyVaultKeyNearExpiry
	TypeKeyExpired           = azsystemevents.TypeKeyVaultKeyExpired
)

// Event schemas as Event.Schema names them.
const (
	SchemaEventGrid   = "EventGrid"
	SchemaCloudEvents = "CloudEvents"
)

// Event is one Key Vault key event, in either schema, reduced to what the
// rotation needs. Events of other types keep their envelope and a zero Key.
type Event struct {
	ID        string
	Type      string // e.g. TypeKeyNewVersionCreated
	Schema    string // SchemaEventGrid or SchemaCloudEvents
	Subject   string
	Time      time.Time // zero when absent or unreadable
	Key       KeyRef    // from data.Id; may be versionless
	VaultName string
	NotBefore time.Time // zero when absent or null
	Expires   time.Time // zero when absent or null

	// Dead-letter metadata, present on events replayed from a
	// dead-letter blob.
	DeadLetterReason string
	DeliveryAttempts int
}

// Rotates reports whether the event asks for a rotation: only a new key
// version does.
func (e Event) Rotates() bool { return e.Type == TypeKeyNewVersionCreated }

// isKeyEvent reports whether t is one of the Key Vault key events whose
// data names a key.
func isKeyEvent(t string) bool {
	return t == TypeKeyNewVersionCreated || t == TypeKeyNearExpiry || t == TypeKeyExpired
}

// DecodeEvents decodes a JSON array of events, or a single event object,
// in the Event Grid or the CloudEvents schema. It returns every event that
// decoded; the error joins one error per event that did not, each naming
// the event's index.
func DecodeEvents(data []byte) ([]Event, error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '{' {
		e, err := DecodeEvent(data)
		if err != nil {
			return nil, err
		}
		return []Event{e}, nil
	}

	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		return nil, fmt.Errorf("decode events: %w", shapeOf(err, data, "a JSON object or array"))
	}
	events := make([]Event, 0, len(raws))
	var errs []error
	for i, raw := range raws {
		e, err := DecodeEvent(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("event %d: %w", i, err))
			continue
		}
		events = append(events, e)
	}
	return events, errors.Join(errs...)
}

// DecodeEvent decodes one event object in either schema. Keys of the
// envelope and of the data match in any case and with stray spaces; an
// object with two keys that match alike, such as "Id" and "id", with
// different values is undecodable, since either could be meant. NBF and
// EXP may be numbers, strings or null and keep whole seconds exactly. The
// key version comes from data.Id, or from data.Version when Id has none.
// Errors describe what was wanted and found in JSON's terms.
func DecodeEvent(data []byte) (Event, error) {
	env, err := Fields(data)
	if err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}

	var e Event
	e.ID = str(env["id"])
	e.Subject = str(env["subject"])
	if _, ok := env["specversion"]; ok {
		e.Schema = SchemaCloudEvents
		e.Type = canonicalType(str(env["type"]))
		e.Time = timeOf(str(env["time"]))
	} else {
		e.Schema = SchemaEventGrid
		e.Type = canonicalType(str(env["eventtype"]))
		e.Time = timeOf(str(env["eventtime"]))
	}
	if e.Type == "" {
		return Event{}, fmt.Errorf("decode event %q: no event type", e.ID)
	}
	e.DeadLetterReason = str(env["deadletterreason"])
	e.DeliveryAttempts, _ = integer(env["deliveryattempts"])

	if !isKeyEvent(e.Type) {
		return e, nil
	}
	body, err := eventData(env)
	if err != nil {
		return Event{}, fmt.Errorf("decode event %q: %w", e.ID, err)
	}
	if err := e.decodeKeyData(body); err != nil {
		return Event{}, fmt.Errorf("decode event %q: %w", e.ID, err)
	}
	return e, nil
}

// decodeKeyData reads the data shared by the three key events.
func (e *Event) decodeKeyData(body []byte) error {
	d, err := Fields(body)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}

	id := str(d["id"])
	if id == "" {
		return errors.New("data: no Id")
	}
	key, err := ParseKeyURL(id)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if key.Version == "" {
		// Id wins; Version only fills an Id that lacks one.
		if v := strings.TrimSpace(str(d["version"])); validName(v, 64) {
			key.Version = v
		}
	}
	e.Key = key
	e.VaultName = strings.TrimSpace(str(d["vaultname"]))

	// NBF and EXP are informational: validity is always read from Key
	// Vault, so a value that is not a time is left out, never a reason
	// to drop the event.
	e.NotBefore, _ = unixTime(d["nbf"])
	e.Expires, _ = unixTime(d["exp"])
	return nil
}

// eventData returns the event's data object: "data" as an object or as a
// string holding one, or CloudEvents' "data_base64".
func eventData(env map[string]json.RawMessage) ([]byte, error) {
	raw, ok := env["data"]
	if !ok || isNull(raw) {
		b64 := str(env["data_base64"])
		if b64 == "" {
			return nil, errors.New("no data")
		}
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("data_base64: %w", err)
		}
		return b, nil
	}
	if raw = bytes.TrimSpace(raw); len(raw) > 0 && raw[0] == '"' {
		return []byte(str(raw)), nil
	}
	return raw, nil
}

// Fields decodes a JSON object of Azure's, an event or its data, into
// its members keyed by lower-cased, trimmed names, as DecodeEvent reads
// them. Members whose names fold together must agree: when two of them
// hold different values, the object is ambiguous and Fields fails,
// naming both; the map it returns then holds every other member.
func Fields(data []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, shapeOf(err, data, "a JSON object")
	}
	if m == nil {
		return nil, errors.New("want a JSON object, got null")
	}

	// Sorted, so that which names an error reports does not depend on
	// map order.
	names := slices.Sorted(maps.Keys(m))
	out := make(map[string]json.RawMessage, len(m))
	first := make(map[string]string, len(m)) // folded → name as written
	var clash error
	for _, name := range names {
		k := strings.ToLower(strings.TrimSpace(name))
		prev, dup := first[k]
		if !dup {
			first[k], out[k] = name, m[name]
			continue
		}
		if _, ok := out[k]; ok && !sameJSON(m[prev], m[name]) {
			delete(out, k)
			if clash == nil {
				clash = fmt.Errorf("has both %q and %q, with different values", prev, name)
			}
		}
	}
	return out, clash
}

// sameJSON reports whether two JSON values are the same, ignoring
// insignificant space and how strings are escaped.
func sameJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	if bytes.Equal(ca.Bytes(), cb.Bytes()) {
		return true
	}
	var sa, sb string
	return json.Unmarshal(a, &sa) == nil && json.Unmarshal(b, &sb) == nil && sa == sb
}

// shapeOf says in JSON's terms why data did not decode as want: it is not
// JSON, or it is JSON of another kind. It never repeats encoding/json's
// Go type names.
func shapeOf(err error, data []byte, want string) error {
	kind := jsonKind(data)
	if _, ok := errors.AsType[*json.SyntaxError](err); ok && kind != "nothing" {
		return fmt.Errorf("want %s, got invalid JSON: %w", want, err)
	}
	return fmt.Errorf("want %s, got %s", want, kind)
}

// jsonKind names the kind of JSON value data holds, with its article.
func jsonKind(data []byte) string {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return "nothing"
	}
	switch c := data[0]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || c >= '0' && c <= '9':
		return "a number"
	}
	return "invalid JSON"
}

func canonicalType(t string) string {
	t = strings.TrimSpace(t)
	for _, known := range []string{TypeKeyNewVersionCreated, TypeKeyNearExpiry, TypeKeyExpired} {
		if strings.EqualFold(t, known) {
			return known
		}
	}
	return t
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// str returns a JSON string's value, or "" for anything else.
func str(raw json.RawMessage) string {
	var s string
	if isNull(raw) || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

func timeOf(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}
	}
	return t
}

// integer reads a JSON number or a string holding one.
func integer(raw json.RawMessage) (int, error) {
	n, err := seconds(raw)
	return int(n), err
}

// unixTime reads Unix seconds from a number, a string holding a number, or
// null. Decoding goes through int64, or float64 for a fraction, so a
// ten-digit time keeps every second.
func unixTime(raw json.RawMessage) (time.Time, error) {
	if isNull(raw) {
		return time.Time{}, nil
	}
	n, err := seconds(raw)
	if err != nil || n == 0 {
		return time.Time{}, err
	}
	return time.Unix(n, 0).UTC(), nil
}

func seconds(raw json.RawMessage) (int64, error) {
	if isNull(raw) {
		return 0, nil
	}
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return 0, nil
	}
	if s[0] == '"' {
		s = strings.TrimSpace(str(raw))
		if s == "" {
			return 0, nil
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1<<53 {
		return 0, fmt.Errorf("%s is not a number of seconds", s)
	}
	return int64(math.Round(f)), nil
}
