package azure_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// TestCredentialRefused points the managed identity credential at the
// emulator's identity endpoint with a wrong secret header or an identity
// the app does not have. Every error must read as one line naming the
// credential, the status and the endpoint's message, keep azidentity's
// error in its chain, and stay retryable (an identity being assigned
// propagates within minutes).
func TestCredentialRefused(t *testing.T) {
	tests := []struct {
		name     string
		header   string // IDENTITY_HEADER; zero: the emulator's
		clientID string // zero: the emulator's
		want     string
	}{
		{"wrong identity header", "not-the-header", "",
			"get token: managed identity refused (401): The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER."},
		{"unknown client id", "", "00000000-0000-0000-0000-00000000c1d0",
			"get token: managed identity refused (400): Unable to load the proper Managed Identity. No user-assigned identity " +
				"with client_id '00000000-0000-0000-0000-00000000c1d0' is assigned to this app, and it has no system-assigned identity."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 2)
			if tt.header != "" {
				t.Setenv("IDENTITY_HEADER", tt.header)
			}
			clientID := f.emu.ClientID()
			if tt.clientID != "" {
				clientID = tt.clientID
			}
			// No SDK retries: the answer is the same on every try.
			co := azcore.ClientOptions{Transport: f.emu.HTTPClient(), Retry: policy.RetryOptions{MaxRetries: -1}}
			cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
				ID: azidentity.ClientID(clientID), ClientOptions: co,
			})
			if err != nil {
				t.Fatal(err)
			}
			relays, err := azure.NewFluidRelay(cred, &azure.FluidRelayOptions{Endpoint: f.emu.ARMEndpoint(), ClientOptions: co})
			if err != nil {
				t.Fatal(err)
			}
			keys := azure.NewKeyVault(cred, &azure.KeyVaultOptions{ClientOptions: co})

			_, err = relays.Get(t.Context(), f.ids[0])
			checkCredentialError(t, "get server", err, tt.want)
			_, err = keys.Key(t.Context(), f.key)
			checkCredentialError(t, "get key", err, tt.want)

			// Through a rotation, into the report.
			r, err := rotation.New(rotation.Config{Keys: keys, Servers: relays, Targets: f.targets(t),
				Logger: logcheck.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			rep := r.Rotate(t.Context(), rotation.Request{Key: f.key})
			reasons := []string{rep.Error}
			for _, s := range rep.Servers {
				reasons = append(reasons, s.Reason)
			}
			for _, reason := range reasons {
				if reason == "" {
					continue
				}
				if strings.ContainsAny(reason, "\n") || strings.Contains(reason, "----") || !strings.Contains(reason, tt.want) {
					t.Errorf("got reason %q, want one line with %q", reason, tt.want)
				}
			}
			if rep.Final() {
				t.Errorf("got a final report %+v, want a retryable one", rep)
			}
		})
	}
}

func checkCredentialError(t *testing.T, op string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want the credential refused", op)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || strings.Contains(msg, "----") || !strings.HasSuffix(msg, want) {
		t.Errorf("%s: got %q, want one line ending %q", op, msg, want)
	}
	if _, ok := errors.AsType[*azidentity.AuthenticationFailedError](err); !ok {
		t.Errorf("%s: got %v, want *azidentity.AuthenticationFailedError in the chain", op, err)
	}
	if !errors.Is(err, rotation.ErrRetryable) {
		t.Errorf("%s: got %v, want it retryable", op, err)
	}
}

// unavailable is a credential that cannot try at all, as azidentity's
// credentials report when their environment names no identity.
type unavailable struct{ err error }

func (u unavailable) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, u.err
}

// TestCredentialUnavailable checks that a credential reporting itself
// unavailable reads as one line too, and stays retryable.
func TestCredentialUnavailable(t *testing.T) {
	f := setup(t, 1)
	co := azcore.ClientOptions{Transport: f.emu.HTTPClient(), Retry: policy.RetryOptions{MaxRetries: -1}}
	cred := unavailable{azidentity.NewCredentialUnavailableError(
		"ManagedIdentityCredential: no managed identity endpoint is available\nsee the troubleshooting guide")}
	relays, err := azure.NewFluidRelay(cred, &azure.FluidRelayOptions{Endpoint: f.emu.ARMEndpoint(), ClientOptions: co})
	if err != nil {
		t.Fatal(err)
	}
	_, err = relays.Get(t.Context(), f.ids[0])
	if err == nil {
		t.Fatal("got no error, want the credential unavailable")
	}
	want := "get token: managed identity unavailable: no managed identity endpoint is available"
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasSuffix(msg, want) {
		t.Errorf("got %q, want one line ending %q", msg, want)
	}
	if !errors.Is(err, rotation.ErrRetryable) {
		t.Errorf("got %v, want it retryable", err)
	}
	if !errors.Is(err, cred.err) {
		t.Errorf("got %v, want the credential's error kept in the chain", err)
	}
}
