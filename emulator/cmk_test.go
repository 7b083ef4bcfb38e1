package emulator_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmkrotator/cmkrotator/emulator"
)

func TestARM_CMKRules(t *testing.T) {
	e := start(t)
	v := e.AddVault("rules")
	cred := credential(t, e, e.HTTPClient())
	c := armClient(t, e, cred, e.HTTPClient())
	ctx := context.Background()
	now := time.Now()

	mk := func(name string, o emulator.KeyOptions) emulator.KeyVersionInfo {
		info, err := v.CreateKey(name, o)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	base := mk("base", emulator.KeyOptions{})
	next := mk("base", emulator.KeyOptions{})
	ec := mk("ec", emulator.KeyOptions{Type: "EC"})
	off := mk("off", emulator.KeyOptions{Disabled: true})
	early := mk("early", emulator.KeyOptions{NotBefore: now.Add(time.Hour)})
	late := mk("late", emulator.KeyOptions{Expires: now.Add(-time.Hour)})
	noWrap := mk("nowrap", emulator.KeyOptions{Ops: []string{"encrypt", "decrypt"}})
	hsm := mk("hsm", emulator.KeyOptions{Type: "RSA-HSM"})

	// Servers pinned to a version that is now disabled or expired.
	stuckOff := mk("stuck-off", emulator.KeyOptions{})
	stuckOffNext := mk("stuck-off", emulator.KeyOptions{})
	stuckExp := mk("stuck-exp", emulator.KeyOptions{})
	stuckExpNext := mk("stuck-exp", emulator.KeyOptions{})
	if err := v.SetEnabled("stuck-off", stuckOff.Version, false); err != nil {
		t.Fatal(err)
	}
	if err := v.SetExpires("stuck-exp", stuckExp.Version, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}

	// Servers pinned to a version that cannot be found.
	gone := mk("gone", emulator.KeyOptions{})
	if err := v.DeleteKey("gone"); err != nil {
		t.Fatal(err)
	}
	missingVersion := v.URL() + "/keys/base/" + strings.Repeat("0", 32)

	defaultIdentity := emulator.DefaultIdentity(emulator.DefaultSubscription,
		emulator.DefaultResourceGroup)
	otherIdentity := "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other"
	tests := []struct {
		name     string
		seed     emulator.ServerSpec
		body     map[string]any
		wantCode string // "" = accepted
	}{
		{"next version", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(next.KID), ""},
		{"versionless", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(v.URL() + "/keys/base"), ""},
		{"RSA-HSM", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(hsm.KID), ""},
		{"same version", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(base.KID), ""},
		{"tags only, no CMK", emulator.ServerSpec{}, map[string]any{"tags": map[string]string{"a": "b"}}, ""},
		{"EC key", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(ec.KID), "KeyVaultKeyTypeNotSupported"},
		{"disabled key", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(off.KID), "KeyVaultKeyDisabled"},
		{"not yet valid", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(early.KID), "KeyVaultKeyNotYetValid"},
		{"expired key", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(late.KID), "KeyVaultKeyExpired"},
		{"no wrapKey", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(noWrap.KID),
			"KeyVaultKeyOperationsNotPermitted"},
		{"missing version", emulator.ServerSpec{KeyURL: base.KID},
			keyPatch(v.URL() + "/keys/base/00000000000000000000000000000000"), "KeyVaultKeyNotFound"},
		{"missing key", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(v.URL() + "/keys/nope"),
			"KeyVaultKeyNotFound"},
		{"unknown vault", emulator.ServerSpec{KeyURL: base.KID},
			keyPatch("https://127.0.0.1:1/keys/base"), "KeyVaultNotFound"},
		{"secret URL", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(v.URL() + "/secrets/base"),
			"InvalidKeyEncryptionKeyUrl"},
		{"previous disabled", emulator.ServerSpec{KeyURL: stuckOff.KID}, keyPatch(stuckOffNext.KID),
			"PreviousKeyVersionDisabled"},
		{"previous expired", emulator.ServerSpec{KeyURL: stuckExp.KID}, keyPatch(stuckExpNext.KID),
			"PreviousKeyVersionExpired"},
		{"URL with a fragment", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(next.KID + "#frag"),
			"InvalidKeyEncryptionKeyUrl"},
		{"URL with an empty fragment", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(next.KID + "#"),
			"InvalidKeyEncryptionKeyUrl"},
		{"URL with a query", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(next.KID + "?a=b"),
			"InvalidKeyEncryptionKeyUrl"},
		{"URL with an empty query", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(next.KID + "?"),
			"InvalidKeyEncryptionKeyUrl"},
		{"URL with user info", emulator.ServerSpec{KeyURL: base.KID},
			keyPatch(strings.Replace(next.KID, "https://", "https://user:pw@", 1)),
			"InvalidKeyEncryptionKeyUrl"},
		{"previous version missing", emulator.ServerSpec{KeyURL: missingVersion}, keyPatch(next.KID),
			"PreviousKeyVersionNotFound"},
		{"previous key deleted", emulator.ServerSpec{KeyURL: gone.KID}, keyPatch(next.KID),
			"PreviousKeyVersionNotFound"},
		{"previous vault unknown", emulator.ServerSpec{KeyURL: "https://127.0.0.1:1/keys/base/" +
			base.Version}, keyPatch(next.KID), "PreviousKeyVersionNotFound"},
		{"previous URL not a key URL", emulator.ServerSpec{KeyURL: v.URL() + "/secrets/base"},
			keyPatch(next.KID), "PreviousKeyVersionNotFound"},
		{"add CMK", emulator.ServerSpec{}, keyPatch(base.KID), "CustomerManagedKeyCannotBeAdded"},
		{"remove CMK", emulator.ServerSpec{KeyURL: base.KID}, map[string]any{"properties": map[string]any{
			"encryption": map[string]any{"customerManagedKeyEncryption": nil}}},
			"CustomerManagedKeyCannotBeRemoved"},
		{"empty URL", emulator.ServerSpec{KeyURL: base.KID}, keyPatch(""), "CustomerManagedKeyCannotBeRemoved"},
		{"system-assigned key identity", emulator.ServerSpec{KeyURL: base.KID},
			map[string]any{"properties": map[string]any{"encryption": map[string]any{
				"customerManagedKeyEncryption": map[string]any{
					"keyEncryptionKeyIdentity": map[string]any{"identityType": "SystemAssigned"},
					"keyEncryptionKeyUrl":      next.KID}}}}, "UserAssignedIdentityRequired"},
		{"system-assigned server identity", emulator.ServerSpec{KeyURL: base.KID},
			map[string]any{"identity": map[string]any{"type": "SystemAssigned"}},
			"UserAssignedIdentityRequired"},
		{"system- and user-assigned server identity", emulator.ServerSpec{KeyURL: base.KID},
			map[string]any{"identity": map[string]any{"type": "SystemAssigned, UserAssigned",
				"userAssignedIdentities": map[string]any{defaultIdentity: map[string]any{}}}},
			"UserAssignedIdentityRequired"},
		{"system- and user-assigned identity with a new version", emulator.ServerSpec{KeyURL: base.KID},
			map[string]any{"identity": map[string]any{"type": "SystemAssigned, UserAssigned",
				"userAssignedIdentities": map[string]any{defaultIdentity: map[string]any{}}},
				"properties": keyPatch(next.KID)["properties"]},
			"UserAssignedIdentityRequired"},
		{"user-assigned server identity restated", emulator.ServerSpec{KeyURL: base.KID},
			map[string]any{"identity": map[string]any{"type": "UserAssigned",
				"userAssignedIdentities": map[string]any{defaultIdentity: map[string]any{}}}}, ""},
		{"identity not on the server", emulator.ServerSpec{KeyURL: base.KID},
			map[string]any{"properties": map[string]any{"encryption": map[string]any{
				"customerManagedKeyEncryption": map[string]any{
					"keyEncryptionKeyIdentity": map[string]any{"identityType": "UserAssigned",
						"userAssignedIdentityResourceId": otherIdentity},
					"keyEncryptionKeyUrl": next.KID}}}}, "UserAssignedIdentityNotFound"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.seed.Name = "relay-" + strconv.Itoa(i)
			id, err := e.PutServer(tt.seed)
			if err != nil {
				t.Fatal(err)
			}
			var got server
			_, err = armCall(ctx, c, http.MethodPatch, id, tt.body, &got)
			after, _ := e.ServerKeyURL(id)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("PATCH: got %v, want success", err)
				}
				if got.keyURL() != after {
					t.Errorf("PATCH answered %q, server has %q", got.keyURL(), after)
				}
				return
			}
			status, code := errorCode(t, err)
			if status != 400 || code != tt.wantCode {
				t.Errorf("got %d %s, want 400 %s", status, code, tt.wantCode)
			}
			if after != tt.seed.KeyURL {
				t.Errorf("refused PATCH changed the key URL from %q to %q", tt.seed.KeyURL, after)
			}
		})
	}
}

// Creating a server with a customer-managed key takes a user-assigned
// identity only; a server that also has a system-assigned one is refused.
func TestARM_CMKCreateIdentityType(t *testing.T) {
	e := start(t)
	v := e.AddVault("create")
	k, _ := v.CreateKey("k", emulator.KeyOptions{})
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	uid := emulator.DefaultIdentity(emulator.DefaultSubscription, emulator.DefaultResourceGroup)
	tests := []struct {
		identityType string
		wantCode     string // "" = created
	}{
		{"UserAssigned", ""},
		{"SystemAssigned, UserAssigned", "UserAssignedIdentityRequired"},
		{"SystemAssigned", "UserAssignedIdentityRequired"},
	}
	for i, tt := range tests {
		t.Run(tt.identityType, func(t *testing.T) {
			id := emulator.ServerID(emulator.DefaultSubscription, emulator.DefaultResourceGroup,
				"relay-"+strconv.Itoa(i))
			body := map[string]any{"location": emulator.DefaultLocation,
				"identity": map[string]any{"type": tt.identityType,
					"userAssignedIdentities": map[string]any{uid: map[string]any{}}},
				"properties": map[string]any{"encryption": map[string]any{
					"customerManagedKeyEncryption": map[string]any{
						"keyEncryptionKeyIdentity": map[string]any{"identityType": "UserAssigned",
							"userAssignedIdentityResourceId": uid},
						"keyEncryptionKeyUrl": k.KID}}}}
			_, err := armCall(context.Background(), c, http.MethodPut, id, body, nil)
			_, exists := e.ServerKeyURL(id)
			if tt.wantCode == "" {
				if err != nil || !exists {
					t.Fatalf("PUT: got %v (exists %v), want the server created", err, exists)
				}
				return
			}
			if status, code := errorCode(t, err); status != 400 || code != tt.wantCode {
				t.Errorf("got %d %s, want 400 %s", status, code, tt.wantCode)
			}
			if exists {
				t.Errorf("refused PUT created the server")
			}
		})
	}
}
