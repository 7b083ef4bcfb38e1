package rotation

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// EventResult is what became of one event.
type EventResult struct {
	EventID string  `json:"eventId"`
	Type    string  `json:"type"`
	Key     string  `json:"key,omitempty"`     // versionless key URL
	Ignored string  `json:"ignored,omitempty"` // why nothing was done
	Report  *Report `json:"report,omitempty"`  // shared by the events of one key
}

// Reasons an event is ignored.
const (
	IgnoredNotRotation   = "not a rotation event"
	IgnoredNotSubscribed = "key not subscribed"
)

// HandleEvents rotates each subscribed key named by a
// KeyNewVersionCreated event once, however many events name it, all
// within one Config.Deadline. Other events are ignored and say why; an
// event for a key that is not subscribed causes no call to Azure. Results
// are in the order of events.
func (r *Rotator) HandleEvents(ctx context.Context, events []Event) []EventResult {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Deadline)
	defer cancel()

	type group struct {
		req    Request // the first event's version, the others' merged in
		events []int
		report *Report
	}
	results := make([]EventResult, len(events))
	groups := make(map[string]*group)
	var order []*group
	for i, e := range events {
		results[i] = EventResult{EventID: e.ID, Type: e.Type}
		if e.Key.Name != "" {
			results[i].Key = e.Key.Versionless().String()
		}
		switch {
		case !e.Rotates():
			results[i].Ignored = IgnoredNotRotation
		default:
			if _, ok := r.cfg.Targets.Lookup(e.Key); !ok {
				results[i].Ignored = IgnoredNotSubscribed
			}
		}
		if results[i].Ignored != "" {
			// A key-change event that reaches us for a key we do not
			// rotate means the Event Grid filter and the map disagree:
			// an error for a person, though a redelivery cannot help.
			level := slog.LevelError
			if results[i].Ignored == IgnoredNotRotation {
				level = slog.LevelInfo
			}
			r.log.Log(ctx, level, "event ignored", "event_id", e.ID, "event_type", e.Type,
				"key_name", e.Key.Name, "vault", e.Key.Vault, "reason", results[i].Ignored)
			continue
		}

		g, ok := groups[e.Key.ID()]
		if !ok {
			g = &group{req: Request{Key: e.Key}}
			groups[e.Key.ID()] = g
			order = append(order, g)
		} else {
			g.req.merge(Request{Key: e.Key})
		}
		g.events = append(g.events, i)
	}

	var wg sync.WaitGroup
	for _, g := range order {
		wg.Go(func() {
			rep := r.Rotate(ctx, g.req)
			g.report = &rep
		})
	}
	wg.Wait()
	for _, g := range order {
		for _, i := range g.events {
			results[i].Report = g.report
		}
	}
	return results
}

// Reports returns the distinct reports of results, in the order of their
// first event (the events of one key share one report).
func Reports(results []EventResult) []Report {
	seen := map[*Report]bool{}
	var reps []Report
	for _, r := range results {
		if r.Report != nil && !seen[r.Report] {
			seen[r.Report] = true
			reps = append(reps, *r.Report)
		}
	}
	return reps
}

// reconcileBudget bounds one Reconcile: the Functions host kills the
// whole handler (every invocation in flight with it) when a function
// runs past functionTimeout, 5 minutes on Consumption plans.
const reconcileBudget = 4 * time.Minute

// reconcileKeys is how many keys Reconcile rotates at once.
const reconcileKeys = 4

// Reconcile brings every subscribed key's servers to the key's current
// version, a few keys at a time, each within Config.Deadline, all within
// reconcileBudget; a key not started by then is reported retryable.
func (r *Rotator) Reconcile(ctx context.Context) []Report {
	ctx, cancel := context.WithTimeout(ctx, reconcileBudget)
	defer cancel()

	targets := r.cfg.Targets.All()
	ids := make([]string, len(targets))
	byID := make(map[string]Target, len(targets))
	for i, t := range targets {
		ids[i] = t.Key.String()
		byID[ids[i]] = t
	}
	return fanOut(ctx, reconcileKeys, ids, nil,
		func(ctx context.Context, id string) Report { return r.Rotate(ctx, Request{Key: byID[id].Key}) },
		func(id string) Report {
			return Report{Key: id, Error: "not reached before the end of the reconcile budget",
				ErrorKind: KindBusy, Retryable: true, Servers: []ServerResult{}}
		})
}

// Status describes every subscribed key and its servers without changing
// anything.
type Status struct {
	Keys []KeyStatus `json:"keys"`
}

// KeyStatus describes one subscribed key.
type KeyStatus struct {
	Key            string         `json:"key"`
	CurrentVersion string         `json:"currentVersion,omitempty"`
	Error          string         `json:"error,omitempty"`
	Retryable      bool           `json:"retryable,omitempty"` // Error may clear without a person
	Servers        []ServerStatus `json:"servers"`
	// SafeToDisable lists enabled versions other than the current one
	// that no server in the subscription map uses; a server outside the
	// map is not seen. It is empty unless every mapped server could be
	// read and exists, and none is mid-update.
	SafeToDisable []string `json:"safeToDisable"`
}

// ServerStatus describes one server of a key.
type ServerStatus struct {
	ID      string `json:"id"`
	Version string `json:"version,omitempty"`
	State   string `json:"state"`
	Error   string `json:"error,omitempty"`
	// Retryable: the state may clear without a person (unreachable, an
	// update still in flight).
	Retryable bool `json:"retryable,omitempty"`
}

// Server states in ServerStatus.State.
const (
	StateCurrent     = "current"
	StateLagging     = "lagging"
	StateAhead       = "ahead"
	StateVersionless = "versionless"
	StateMismatch    = "mismatch"
	StateUnreachable = "unreachable"
	StateNoCMK       = "no-cmk"
	// StateGone: the server's version no longer exists in the vault (the
	// key was deleted, or deleted and recreated under the same name).
	// Fluid Relay cannot move it; a person must.
	StateGone = "gone"
	// StateDisabled and StateExpired: the server's version is disabled or
	// past its expiry. The server stops working, and Fluid Relay refuses
	// to move it until the version is enabled (or its expiry extended).
	StateDisabled = "disabled"
	StateExpired  = "expired"
	// StateNotFound: Resource Manager has no such server.
	StateNotFound = "not-found"
	// StateUnsettled: on the current version, but its provisioningState
	// is not Succeeded (an update in flight, or one that failed).
	StateUnsettled = "unsettled"
	// StateUnknown: the server was read and its version exists, but the
	// key's current version could not be read for a reason a retry will
	// not clear (the key's error says which), so the server cannot be
	// placed against it.
	StateUnknown = "unknown"
)

// Status reads every subscribed key and server within Config.Deadline.
func (r *Rotator) Status(ctx context.Context) Status {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Deadline)
	defer cancel()

	st := Status{Keys: []KeyStatus{}}
	for _, t := range r.cfg.Targets.All() {
		st.Keys = append(st.Keys, r.keyStatus(ctx, t))
	}
	return st
}

func (r *Rotator) keyStatus(ctx context.Context, t Target) KeyStatus {
	ks := KeyStatus{Key: t.Key.String(), Servers: []ServerStatus{}, SafeToDisable: []string{}}
	cur, err := r.version(ctx, t.Key, t.Key)
	if err == nil {
		if cerr := CheckTarget(cur, time.Now()); cerr != nil {
			// Lagging servers cannot move until the key has a usable
			// current version; say so once, for the key.
			ks.Error = "current version cannot protect a server: " + cerr.Error()
		}
	}
	if err != nil {
		ks.Error, ks.Retryable = "read current version: "+err.Error(), retryable(err)
	} else {
		ks.CurrentVersion = cur.Ref.Version
	}

	var cache versionCache
	ks.Servers = fanOut(ctx, r.cfg.Concurrency, t.Servers, nil,
		func(ctx context.Context, id string) ServerStatus {
			return r.serverStatus(ctx, t.Key, cur, err, &cache, id)
		},
		func(id string) ServerStatus {
			return ServerStatus{ID: id, State: StateUnreachable, Error: "not reached before the deadline", Retryable: true}
		})

	complete := err == nil
	used := map[string]bool{strings.ToLower(cur.Ref.Version): true} // never offer the current one
	for _, s := range ks.Servers {
		switch s.State {
		case StateUnreachable, StateUnsettled, StateNotFound:
			// Unread, mid-update (a failed update may leave the server
			// on its previous version), or not found (a wrong ID in the
			// map may hide a server that uses any version): no version
			// is known safe.
			complete = false
		case StateVersionless:
			used[strings.ToLower(cur.Ref.Version)] = true
		}
		if s.Version != "" {
			used[strings.ToLower(s.Version)] = true
		}
	}
	if !complete {
		return ks
	}

	versions, err := r.cfg.Keys.Versions(ctx, t.Key)
	if err != nil {
		ks.Error, ks.Retryable = "list versions: "+err.Error(), retryable(err)
		return ks
	}
	slices.SortFunc(versions, func(a, b KeyVersion) int { return a.Created.Compare(b.Created) })
	for _, v := range versions {
		if v.Enabled && !used[strings.ToLower(v.Ref.Version)] {
			ks.SafeToDisable = append(ks.SafeToDisable, v.Ref.Version)
		}
	}
	return ks
}

// serverStatus reads server id and places it against the key's current
// version cur; curErr is why cur is unknown, when it is.
func (r *Rotator) serverStatus(ctx context.Context, key KeyRef, cur KeyVersion, curErr error,
	cache *versionCache, id string) ServerStatus {
	st := ServerStatus{ID: id}
	s, err := r.cfg.Servers.Get(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		st.State, st.Error = StateNotFound, "server not found: deleted, or a wrong ID in the map"
		return st
	case err != nil:
		st.State, st.Error, st.Retryable = StateUnreachable, err.Error(), retryable(err)
		return st
	}
	if strings.TrimSpace(s.KeyURL) == "" {
		st.State = StateNoCMK
		st.Error = "the server has no customer-managed key, and one cannot be added to an existing server; " +
			"remove it from the map"
		return st
	}
	ref, err := ParseKeyURL(s.KeyURL)
	switch {
	case err != nil:
		st.State = StateMismatch
		st.Error = "the server's key URL is not a Key Vault key URL; fix the server or remove it from the map"
		return st
	case !ref.SameKey(key):
		st.State = StateMismatch
		st.Error = "the server uses " + ref.Versionless().String() + ", not the mapped key; " +
			"map it under that key, or move it by hand"
		return st
	case ref.Version == "":
		st.State = StateVersionless
		return st
	}
	st.Version = ref.Version
	if cur.Ref.Version == "" {
		return r.withoutCurrent(ctx, st, ref, curErr, cache)
	}
	if strings.EqualFold(ref.Version, cur.Ref.Version) {
		st.State = StateCurrent
		if !strings.EqualFold(s.ProvisioningState, "Succeeded") {
			st.State, st.Error = StateUnsettled, "provisioningState "+s.ProvisioningState
			st.Retryable = !provisioningFailed(s.ProvisioningState)
		}
		return st
	}
	st.State = StateLagging
	v, err := cache.get(ctx, r.cfg.Keys, ref)
	switch {
	case err != nil:
	case blocked(&st, ref, v):
	case Newer(*v, cur, cur.Ref.Version):
		st.State = StateAhead
	}
	return st
}

// withoutCurrent places a server on version ref of the key when the
// key's current version could not be read (curErr says why). Only a
// failed read is unreachable: the server's own version, when it is gone,
// disabled or expired, says what a person must do; one that is usable
// is lagging behind a disabled current version (the newest, as Key Vault
// calls current the version created last); otherwise it is unknown.
func (r *Rotator) withoutCurrent(ctx context.Context, st ServerStatus, ref KeyRef, curErr error,
	cache *versionCache) ServerStatus {
	if retryable(curErr) {
		st.State, st.Retryable = StateUnreachable, true
		st.Error = "current version unknown: reading it failed, and a retry may succeed"
		return st
	}
	v, err := cache.get(ctx, r.cfg.Keys, ref)
	switch {
	case err != nil:
		st.State, st.Error, st.Retryable = StateUnreachable, "read version "+ref.Version+": "+err.Error(), retryable(err)
	case blocked(&st, ref, v):
	case errors.Is(curErr, ErrDisabled):
		st.State = StateLagging
	default:
		st.State = StateUnknown
		st.Error = "version " + ref.Version + " exists, but the key's current version could not be read; " +
			"see the key's error"
	}
	return st
}

// blocked sets st's state and error when the server's version ref, as the
// vault describes it (v, nil when it does not exist), keeps Fluid Relay
// from moving the server, and reports whether it does.
func blocked(st *ServerStatus, ref KeyRef, v *KeyVersion) bool {
	switch {
	case v == nil:
		st.State = StateGone
		st.Error = "version " + ref.Version + " no longer exists in the key vault (key deleted or recreated); " +
			"restore the key or move the server by hand"
	case !v.Enabled:
		st.State = StateDisabled
		st.Error = "version " + ref.Version + " is disabled: the server cannot use its key, and Fluid Relay " +
			"refuses to move it until the version is enabled again"
	case !v.Expires.IsZero() && !time.Now().Before(v.Expires):
		st.State = StateExpired
		st.Error = "version " + ref.Version + " expired at " + v.Expires.UTC().Format(time.RFC3339) +
			": extend its expiry, then rotate"
	default:
		return false
	}
	return true
}
