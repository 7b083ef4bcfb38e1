// Package testenv builds, for tests, what function builds for the
// product: the managed identity credential and the Azure adapters, here
// pointed at an emulator, and a subscription map.
//
// It is imported by tests only. Helpers fail the test on error.
package testenv

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// Start starts an emulator with the default options, closed when the
// test ends. Its identity header, the managed identity secret, is given
// to logcheck.Secret: no log may show it.
func Start(t testing.TB) *emulator.Emulator {
	t.Helper()
	emu, err := emulator.Start(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	logcheck.Secret(t, emu.IdentityHeader())
	return emu
}

// Servers creates servers relay-1…relay-n on keyURL and returns their IDs.
func Servers(t testing.TB, emu *emulator.Emulator, n int, keyURL string) []string {
	t.Helper()
	var ids []string
	for i := 1; i <= n; i++ {
		id, err := emu.PutServer(emulator.ServerSpec{Name: fmt.Sprintf("relay-%d", i), KeyURL: keyURL})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// Event decodes the KeyNewVersionCreated event, in the Event Grid schema,
// that emu would deliver for version v of vault.
func Event(t testing.TB, emu *emulator.Emulator, v emulator.KeyVersionInfo, vault string) rotation.Event {
	t.Helper()
	b, err := json.Marshal(emu.KeyEvent(rotation.TypeKeyNewVersionCreated, v, vault))
	if err != nil {
		t.Fatal(err)
	}
	e, err := rotation.DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// KeyURL returns the key URL a Fluid Relay server's JSON (a PATCH body or
// an answer) names in properties.encryption.customerManagedKeyEncryption.
func KeyURL(body []byte) (string, error) {
	var b struct {
		Properties struct {
			Encryption struct {
				CustomerManagedKeyEncryption struct {
					KeyEncryptionKeyURL string `json:"keyEncryptionKeyUrl"`
				} `json:"customerManagedKeyEncryption"`
			} `json:"encryption"`
		} `json:"properties"`
	}
	err := json.Unmarshal(body, &b)
	return b.Properties.Encryption.CustomerManagedKeyEncryption.KeyEncryptionKeyURL, err
}

// Adapters returns azidentity's managed identity credential for emu's
// user-assigned identity and the Key Vault and Fluid Relay adapters,
// all with client options co (set co.Transport to reach emu). It points
// the managed identity environment (IDENTITY_ENDPOINT, IDENTITY_HEADER)
// at emu for the rest of the test, so tests that call it must not run in
// parallel. The identity header is given to logcheck.Secret.
func Adapters(t testing.TB, emu *emulator.Emulator, co azcore.ClientOptions) (azcore.TokenCredential, *azure.KeyVault, *azure.FluidRelay) {
	t.Helper()
	logcheck.Secret(t, emu.IdentityHeader())
	t.Setenv("IDENTITY_ENDPOINT", emu.IdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", emu.IdentityHeader())

	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ID: azidentity.ClientID(emu.ClientID()), ClientOptions: co,
	})
	if err != nil {
		t.Fatal(err)
	}
	relays, err := azure.NewFluidRelay(cred, &azure.FluidRelayOptions{Endpoint: emu.ARMEndpoint(), ClientOptions: co})
	if err != nil {
		t.Fatal(err)
	}
	return cred, azure.NewKeyVault(cred, &azure.KeyVaultOptions{ClientOptions: co}), relays
}

// Targets returns a subscription map of one key URL and its servers.
func Targets(t testing.TB, key string, servers ...string) rotation.Targets {
	t.Helper()
	doc, err := json.Marshal(map[string]any{"targets": []any{map[string]any{"key": key, "servers": servers}}})
	if err != nil {
		t.Fatal(err)
	}
	targets, err := rotation.ParseTargets(doc)
	if err != nil {
		t.Fatal(err)
	}
	return targets
}
