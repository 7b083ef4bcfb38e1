package rotation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Target is one subscribed key and the servers that use it.
type Target struct {
	Key     KeyRef   // versionless
	Servers []string // Fluid Relay server ARM resource IDs, as written
}

// Targets is the subscription map: the allow-list of keys the rotation
// acts on and, for each, the servers it may update. The zero value maps
// nothing. A Targets is immutable and safe for concurrent use.
type Targets struct {
	byKey map[string]Target // by KeyRef.ID
	order []string          // KeyRef.IDs in the order written
}

// targetJSON is one entry of the map's "targets" array.
type targetJSON struct {
	Key     string   `json:"key"`
	Servers []string `json:"servers"`
}

// The shapes errors ask for.
const (
	wantDoc     = `a JSON object, {"targets": [{"key": …, "servers": […]}]}`
	wantTarget  = `an object, {"key": "https://{vault}/keys/{name}", "servers": ["/subscriptions/…"]}`
	wantTargets = `an array of objects, [{"key": …, "servers": […]}]`
)

// ParseTargets parses and validates the subscription map:
//
//	{"targets": [{"key": "https://{vault}/keys/{name}", "servers": ["/subscriptions/…/fluidRelayServers/{name}"]}]}
//
// Keys must be versionless key URLs; servers must be Fluid Relay server
// resource IDs. A key may appear once and a server under one key only.
// Errors name the offending entry and say what shape was expected.
func ParseTargets(data []byte) (Targets, error) {
	var doc struct {
		Targets []json.RawMessage `json:"targets"`
	}
	if err := decodeStrict(data, &doc); err != nil {
		return Targets{}, fmt.Errorf("parse rotation targets: %w", shapeError(err, wantDoc, map[string]string{
			"targets": wantTargets,
		}))
	}

	entries := make([]targetJSON, len(doc.Targets))
	for i, raw := range doc.Targets {
		if err := decodeStrict(raw, &entries[i]); err != nil {
			return Targets{}, fmt.Errorf("parse rotation targets: targets[%d]: %w", i, shapeError(err, wantTarget, map[string]string{
				"key":     "a key URL string",
				"servers": "server resource IDs, strings in an array",
			}))
		}
	}

	t := Targets{byKey: make(map[string]Target)}
	owner := make(map[string]string) // folded server ID → key URL
	for i, e := range entries {
		key, err := ParseKeyURL(e.Key)
		if err != nil {
			return Targets{}, fmt.Errorf("parse rotation targets: targets[%d]: %w", i, err)
		}
		if key.Version != "" {
			return Targets{}, fmt.Errorf("parse rotation targets: targets[%d]: key %q: want a versionless key URL", i, e.Key)
		}
		if prev, dup := t.byKey[key.ID()]; dup {
			return Targets{}, fmt.Errorf("parse rotation targets: targets[%d]: key %q already listed as %q", i, e.Key, prev.Key)
		}
		if len(e.Servers) == 0 {
			return Targets{}, fmt.Errorf("parse rotation targets: targets[%d]: key %q: no servers", i, e.Key)
		}

		target := Target{Key: key}
		for j, id := range e.Servers {
			id = strings.TrimSpace(id)
			if err := checkServerID(id); err != nil {
				return Targets{}, fmt.Errorf("parse rotation targets: targets[%d].servers[%d]: %w", i, j, err)
			}
			folded := strings.ToLower(strings.TrimSuffix(id, "/"))
			if k, dup := owner[folded]; dup {
				return Targets{}, fmt.Errorf("parse rotation targets: targets[%d].servers[%d]: server %q already listed under %s", i, j, id, k)
			}
			owner[folded] = key.String()
			target.Servers = append(target.Servers, strings.TrimSuffix(id, "/"))
		}
		t.byKey[key.ID()] = target
		t.order = append(t.order, key.ID())
	}
	return t, nil
}

// decodeStrict decodes data, one JSON value, into v, refusing fields v
// does not have.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// shapeError says in words what a JSON decoding error found and what
// was wanted: want for the value itself, fields[name] for a field of it.
// Errors of another kind pass through.
func shapeError(err error, want string, fields map[string]string) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		got, _, _ := strings.Cut(te.Value, " ") // "number 5" is a number
		if w, ok := fields[te.Field]; ok {
			return fmt.Errorf("%s: want %s, got %s", te.Field, w, article(got))
		}
		if te.Field == "" {
			return fmt.Errorf("want %s, got %s", want, article(got))
		}
		return fmt.Errorf("%s: want %s, got %s", te.Field, want, article(got))
	}
	// encoding/json has no type for an unknown field; its message is
	// `json: unknown field "name"`.
	if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		names := make([]string, 0, len(fields))
		for f := range fields {
			names = append(names, strconv.Quote(f))
		}
		sort.Strings(names)
		return fmt.Errorf("unknown field %s; want only %s", msg, strings.Join(names, " and "))
	}
	return err
}

// article is a JSON kind with its indefinite article.
func article(kind string) string {
	switch kind {
	case "array", "object":
		return "an " + kind
	case "bool":
		return "a boolean"
	case "":
		return "something else"
	}
	return "a " + kind
}

// checkServerID accepts
// /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.FluidRelay/fluidRelayServers/{name},
// matching the fixed segments in any case.
func checkServerID(id string) error {
	parts := strings.Split(strings.TrimSuffix(id, "/"), "/")
	fixed := map[int]string{1: "subscriptions", 3: "resourcegroups", 5: "providers", 6: "microsoft.fluidrelay", 7: "fluidrelayservers"}
	ok := len(parts) == 9 && parts[0] == ""
	for i := 1; ok && i < len(parts); i++ {
		want, isFixed := fixed[i]
		ok = parts[i] != "" && (!isFixed || strings.ToLower(parts[i]) == want)
	}
	if !ok {
		return fmt.Errorf("server %q: want /subscriptions/{id}/resourceGroups/{rg}/providers/Microsoft.FluidRelay/fluidRelayServers/{name}", id)
	}
	return nil
}

// Lookup returns the target for k's key, matching vault host and key name
// exactly but in any case and ignoring k's version.
func (t Targets) Lookup(k KeyRef) (Target, bool) {
	target, ok := t.byKey[k.ID()]
	return target, ok
}

// All returns every target in the order written.
func (t Targets) All() []Target {
	out := make([]Target, 0, len(t.order))
	for _, id := range t.order {
		out = append(out, t.byKey[id])
	}
	return out
}

// Len returns the number of subscribed keys.
func (t Targets) Len() int { return len(t.order) }

// ServerIDs returns every mapped server, sorted, for logs and status.
func (t Targets) ServerIDs() []string {
	var ids []string
	for _, target := range t.byKey {
		ids = append(ids, target.Servers...)
	}
	sort.Strings(ids)
	return ids
}

// Discover returns a copy of t in which every server found in scopes
// (subscriptions or resource groups, as Servers.List takes them) whose key
// URL uses one of t's keys is subscribed to that key. Servers already
// mapped stay where they are; keys are never added.
func (t Targets) Discover(ctx context.Context, servers Servers, scopes ...string) (Targets, error) {
	out := Targets{byKey: make(map[string]Target, len(t.byKey)), order: slices.Clone(t.order)}
	mapped := make(map[string]bool)
	for id, target := range t.byKey {
		target.Servers = slices.Clone(target.Servers)
		out.byKey[id] = target
		for _, s := range target.Servers {
			mapped[strings.ToLower(s)] = true
		}
	}

	for _, scope := range scopes {
		found, err := servers.List(ctx, scope)
		if err != nil {
			return Targets{}, fmt.Errorf("discover servers in %s: %w", scope, err)
		}
		for _, s := range found {
			ref, err := ParseKeyURL(s.KeyURL)
			target, ok := out.byKey[ref.ID()]
			if err != nil || !ok || mapped[strings.ToLower(s.ID)] || checkServerID(s.ID) != nil {
				continue
			}
			target.Servers = append(target.Servers, s.ID)
			out.byKey[ref.ID()] = target
			mapped[strings.ToLower(s.ID)] = true
		}
	}
	return out, nil
}
