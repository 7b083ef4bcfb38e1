package rotation_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/rotation"
)

var (
	now  = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cmk  = rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "cmk"}
	kv1  = "https://kv1.vault.azure.net/keys/cmk/"
	v1   = version("v1", now.Add(-72*time.Hour))
	v2   = version("v2", now.Add(-48*time.Hour))
	v3   = version("v3", now.Add(-24*time.Hour))
	v3tw = version("v3twin", now.Add(-24*time.Hour)) // created in the same second as v3
)

func version(v string, created time.Time) rotation.KeyVersion {
	return rotation.KeyVersion{
		Ref: cmk.WithVersion(v), Type: "RSA", Ops: []string{"wrapKey", "unwrapKey"},
		Enabled: true, Created: created,
	}
}

func disabled(v rotation.KeyVersion) *rotation.KeyVersion { v.Enabled = false; return &v }
func expired(v rotation.KeyVersion) *rotation.KeyVersion {
	v.Expires = now.Add(-time.Minute)
	return &v
}
func on(url string) rotation.Server {
	return rotation.Server{ID: relayEU, KeyURL: url, ProvisioningState: "Succeeded"}
}

func provisioning(s rotation.Server, state string) rotation.Server {
	s.ProvisioningState = state
	return s
}

func TestDecide(t *testing.T) {
	tests := []struct {
		rule string
		in   rotation.Input
		want rotation.Decision
	}{
		{
			rule: "a server on an older version is patched to the target",
			in:   rotation.Input{Server: on(kv1 + "v1"), Previous: &v1, Target: v2, Current: "v2"},
			want: rotation.Decision{Action: rotation.Patch, Outcome: rotation.Rotated, Reason: "rotate from v1 to v2", PreviousVersion: "v1"},
		},
		{
			rule: "a server already on the target is current, nothing written",
			in:   rotation.Input{Server: on(kv1 + "v2"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Current, Reason: rotation.ReasonCurrent, PreviousVersion: "v2"},
		},
		{
			rule: "a server on the target whose update has not settled is not current yet, and may settle",
			in:   rotation.Input{Server: provisioning(on(kv1+"v2"), "Updating"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Failed, Retryable: true, PreviousVersion: "v2",
				Reason: rotation.ReasonUnsettled + ": provisioningState Updating"},
		},
		{
			rule: "a server on the target whose provisioning failed needs a person",
			in:   rotation.Input{Server: provisioning(on(kv1+"v2"), "Failed"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Failed, PreviousVersion: "v2",
				Reason: rotation.ReasonProvisionFailed + ": provisioningState Failed"},
		},
		{
			rule: "version and key name compare without case",
			in:   rotation.Input{Server: on("https://KV1.vault.azure.net/keys/CMK/V2"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Current, Reason: rotation.ReasonCurrent, PreviousVersion: "V2"},
		},
		{
			rule: "a server on a newer version is never moved back",
			in:   rotation.Input{Server: on(kv1 + "v3"), Previous: &v3, Target: v2, Current: "v3"},
			want: rotation.Decision{Outcome: rotation.Skipped, Reason: rotation.ReasonNewer, PreviousVersion: "v3"},
		},
		{
			rule: "only an explicit manual request moves a server back",
			in:   rotation.Input{Server: on(kv1 + "v3"), Previous: &v3, Target: v2, Current: "v3", AllowOlder: true},
			want: rotation.Decision{Action: rotation.Patch, Outcome: rotation.Rotated, Reason: "move back from v3 to older v2 on request", PreviousVersion: "v3"},
		},
		{
			rule: "same creation second: the key's current version is the newer",
			in:   rotation.Input{Server: on(kv1 + "v3twin"), Previous: &v3tw, Target: v3, Current: "v3"},
			want: rotation.Decision{Action: rotation.Patch, Outcome: rotation.Rotated, Reason: "rotate from v3twin to v3", PreviousVersion: "v3twin"},
		},
		{
			rule: "same creation second: a server on the current version stays",
			in:   rotation.Input{Server: on(kv1 + "v3"), Previous: &v3, Target: v3tw, Current: "v3"},
			want: rotation.Decision{Outcome: rotation.Skipped, Reason: rotation.ReasonNewer, PreviousVersion: "v3"},
		},
		{
			rule: "a versionless server follows the latest version itself",
			in:   rotation.Input{Server: on("https://kv1.vault.azure.net/keys/cmk"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Skipped, Reason: rotation.ReasonVersionless},
		},
		{
			rule: "a server on another key is a mismatch",
			in:   rotation.Input{Server: on("https://kv1.vault.azure.net/keys/cmk-old/v1"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Skipped, Reason: "mismatch: uses https://kv1.vault.azure.net/keys/cmk-old"},
		},
		{
			rule: "a server on another vault is a mismatch",
			in:   rotation.Input{Server: on("https://kv2.vault.azure.net/keys/cmk/v1"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Skipped, Reason: "mismatch: uses https://kv2.vault.azure.net/keys/cmk"},
		},
		{
			rule: "a key URL that is not a key URL is a mismatch",
			in:   rotation.Input{Server: on("https://kv1.vault.azure.net/secrets/cmk/v1"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Skipped, Reason: "mismatch: key URL is not a Key Vault key URL"},
		},
		{
			rule: "a server without a customer-managed key is never given one",
			in:   rotation.Input{Server: on(""), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Skipped, Reason: rotation.ReasonNoCMK},
		},
		{
			rule: "a disabled previous version fails finally: Fluid Relay refuses the update",
			in:   rotation.Input{Server: on(kv1 + "v1"), Previous: disabled(v1), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Failed, Reason: rotation.ReasonPreviousOff, PreviousVersion: "v1"},
		},
		{
			rule: "a disabled previous version Key Vault will not describe fails too",
			in:   rotation.Input{Server: on(kv1 + "v1"), Previous: &rotation.KeyVersion{Ref: cmk.WithVersion("v1")}, Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Failed, Reason: rotation.ReasonPreviousOff, PreviousVersion: "v1"},
		},
		{
			rule: "an expired previous version fails finally",
			in:   rotation.Input{Server: on(kv1 + "v1"), Previous: expired(v1), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Failed, Reason: rotation.ReasonPreviousExpired, PreviousVersion: "v1"},
		},
		{
			rule: "a previous version the vault does not know fails finally",
			in:   rotation.Input{Server: on(kv1 + "gone"), Target: v2, Current: "v2"},
			want: rotation.Decision{Outcome: rotation.Failed, Reason: rotation.ReasonPreviousGone, PreviousVersion: "gone"},
		},
		{
			rule: "a newer disabled version is still never moved back",
			in:   rotation.Input{Server: on(kv1 + "v3"), Previous: disabled(v3), Target: v2, Current: "v3"},
			want: rotation.Decision{Outcome: rotation.Skipped, Reason: rotation.ReasonNewer, PreviousVersion: "v3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			tt.in.Key, tt.in.Now = cmk, now
			got := rotation.Decide(tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckTarget(t *testing.T) {
	with := func(f func(*rotation.KeyVersion)) rotation.KeyVersion { v := v2; f(&v); return v }
	tests := []struct {
		rule string
		v    rotation.KeyVersion
		ok   bool
	}{
		{"RSA, enabled, in its window, wrap and unwrap: valid", v2, true},
		{"RSA-HSM is valid", with(func(v *rotation.KeyVersion) { v.Type = "RSA-HSM" }), true},
		{"inside nbf and exp", with(func(v *rotation.KeyVersion) { v.NotBefore, v.Expires = now.Add(-time.Hour), now.Add(time.Hour) }), true},
		{"EC keys cannot wrap", with(func(v *rotation.KeyVersion) { v.Type = "EC" }), false},
		{"oct keys are refused", with(func(v *rotation.KeyVersion) { v.Type = "oct-HSM" }), false},
		{"disabled is refused", with(func(v *rotation.KeyVersion) { v.Enabled = false }), false},
		{"not yet valid is refused", with(func(v *rotation.KeyVersion) { v.NotBefore = now.Add(time.Second) }), false},
		{"expired is refused", with(func(v *rotation.KeyVersion) { v.Expires = now }), false},
		{"without unwrapKey is refused", with(func(v *rotation.KeyVersion) { v.Ops = []string{"wrapKey", "sign"} }), false},
		{"without wrapKey is refused", with(func(v *rotation.KeyVersion) { v.Ops = []string{"unwrapKey"} }), false},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			err := rotation.CheckTarget(tt.v, now)
			if (err == nil) != tt.ok {
				t.Errorf("CheckTarget = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	in := rotation.Input{Key: cmk, Server: on(kv1 + "v1"), Previous: &v1, Target: v2, Current: "v2", Now: now}
	b.ReportAllocs()
	for b.Loop() {
		if d := rotation.Decide(in); d.Action != rotation.Patch {
			b.Fatalf("got %v, want patch", d.Action)
		}
	}
}
