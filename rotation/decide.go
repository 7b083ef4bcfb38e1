package rotation

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Action is what the rotation does to one server.
type Action int

const (
	Leave Action = iota // write nothing; Decision.Outcome is final
	Patch               // PATCH the key URL to the target, then confirm
)

func (a Action) String() string {
	if a == Patch {
		return "patch"
	}
	return "leave"
}

// Reasons a server is left alone or cannot be moved. They are stable
// strings: reports and logs carry them.
const (
	ReasonCurrent         = "already on the target version"
	ReasonUnsettled       = "on the target version, but its update has not settled"
	ReasonProvisionFailed = "on the target version, but its provisioning failed"
	ReasonConfirmed       = "confirmed on the target by this process within 15m; not read again before the deadline"
	ReasonNoCMK           = "no customer-managed key"
	ReasonMismatch        = "mismatch"
	ReasonVersionless     = "versionless: follows the latest version itself"
	ReasonNewer           = "newer version, never moved back"
	ReasonPreviousGone    = "previous version not found"
	ReasonPreviousOff     = "previous version disabled"
	ReasonPreviousExpired = "previous version expired"
)

// Input is everything the decision for one server depends on.
type Input struct {
	Key    KeyRef     // the subscribed key, versionless
	Target KeyVersion // the validated target version
	// Current is the key's current version as Key Vault reports it; it
	// breaks ties between versions created in the same second.
	Current string
	Server  Server // as read
	// Previous describes the version the server is on, when it is a
	// version of Key; nil when Key Vault does not know that version.
	Previous *KeyVersion
	// AllowOlder lets a manual request move a server back to an older
	// version; events never set it.
	AllowOlder bool
	Now        time.Time
}

// Decision is the outcome of Decide for one server.
type Decision struct {
	Action  Action
	Outcome Outcome // for Leave: the final outcome; for Patch: Rotated once confirmed
	Reason  string
	// PreviousVersion is the version the server is on; empty when it is
	// versionless or on another key.
	PreviousVersion string
	// Retryable: for a Failed outcome, whether a later attempt could
	// succeed without a person.
	Retryable bool
}

// Decide applies the rotation rules to one server. It is pure: the same
// input always gives the same decision, and it performs no I/O.
//
// In order: a server without a customer-managed key, on another vault or
// key, or on a versionless URL is skipped; a server on the target is
// current when its provisioningState is Succeeded (failed otherwise,
// retryable while the update may still settle); a server on a newer version is skipped unless AllowOlder; a
// server whose version is disabled, expired or gone fails finally, since
// Fluid Relay refuses the update; anything else is patched.
func Decide(in Input) Decision {
	if strings.TrimSpace(in.Server.KeyURL) == "" {
		return Decision{Outcome: Skipped, Reason: ReasonNoCMK}
	}
	ref, err := ParseKeyURL(in.Server.KeyURL)
	if err != nil {
		return Decision{Outcome: Skipped, Reason: ReasonMismatch + ": key URL is not a Key Vault key URL"}
	}
	if !ref.SameKey(in.Key) {
		return Decision{Outcome: Skipped, Reason: ReasonMismatch + ": uses " + ref.Versionless().String()}
	}
	if ref.Version == "" {
		return Decision{Outcome: Skipped, Reason: ReasonVersionless}
	}

	d := Decision{PreviousVersion: ref.Version}
	if strings.EqualFold(ref.Version, in.Target.Ref.Version) {
		// On the target, but current only once Resource Manager says the
		// update succeeded: an update in flight may still settle, a
		// failed one needs a person.
		switch st := in.Server.ProvisioningState; {
		case strings.EqualFold(st, "Succeeded"):
			d.Outcome, d.Reason = Current, ReasonCurrent
		case provisioningFailed(st):
			d.Outcome, d.Reason = Failed, ReasonProvisionFailed+": provisioningState "+st
		default:
			d.Outcome, d.Reason, d.Retryable = Failed, ReasonUnsettled+": provisioningState "+st, true
		}
		return d
	}

	prev := in.Previous
	if prev != nil && Newer(*prev, in.Target, in.Current) && !in.AllowOlder {
		d.Outcome, d.Reason = Skipped, ReasonNewer
		return d
	}
	switch {
	case prev == nil:
		d.Outcome, d.Reason = Failed, ReasonPreviousGone
		return d
	case !prev.Enabled:
		d.Outcome, d.Reason = Failed, ReasonPreviousOff
		return d
	case !prev.Expires.IsZero() && !in.Now.Before(prev.Expires):
		d.Outcome, d.Reason = Failed, ReasonPreviousExpired
		return d
	}

	d.Action, d.Outcome = Patch, Rotated
	d.Reason = fmt.Sprintf("rotate from %s to %s", ref.Version, in.Target.Ref.Version)
	if Newer(*prev, in.Target, in.Current) {
		d.Reason = fmt.Sprintf("move back from %s to older %s on request", ref.Version, in.Target.Ref.Version)
	}
	return d
}

// Newer reports whether version a is newer than version b by Key Vault's
// creation time. Versions created in the same second are ordered by
// current (the key's current version is the newer), then by version
// string, so that the order is total and stable.
func Newer(a, b KeyVersion, current string) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	av, bv := a.Ref.Version, b.Ref.Version
	switch {
	case strings.EqualFold(av, bv):
		return false
	case strings.EqualFold(av, current):
		return true
	case strings.EqualFold(bv, current):
		return false
	}
	return strings.ToLower(av) > strings.ToLower(bv)
}

// CheckTarget reports why version v cannot protect a Fluid Relay server
// at time now, or nil when it can: the key must be RSA or RSA-HSM,
// enabled, inside its nbf/exp window, and allow wrapKey and unwrapKey.
func CheckTarget(v KeyVersion, now time.Time) error {
	switch {
	case v.Type != "RSA" && v.Type != "RSA-HSM":
		return fmt.Errorf("version %s: key type %q cannot wrap keys; want RSA or RSA-HSM", v.Ref.Version, v.Type)
	case !v.Enabled:
		return fmt.Errorf("version %s: disabled", v.Ref.Version)
	case !v.NotBefore.IsZero() && now.Before(v.NotBefore):
		return fmt.Errorf("version %s: not valid before %s", v.Ref.Version, v.NotBefore.UTC().Format(time.RFC3339))
	case !v.Expires.IsZero() && !now.Before(v.Expires):
		return fmt.Errorf("version %s: expired at %s", v.Ref.Version, v.Expires.UTC().Format(time.RFC3339))
	}
	for _, op := range []string{"wrapKey", "unwrapKey"} {
		if !slices.Contains(v.Ops, op) {
			return fmt.Errorf("version %s: operation %s not permitted", v.Ref.Version, op)
		}
	}
	return nil
}
