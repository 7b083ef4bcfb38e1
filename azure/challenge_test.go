package azure_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// challengeClientID is the identity the emulators of this file give the
// function. azidentity's managed identity tokens are cached for the whole
// process by client ID and resource, so tokens obtained here must not
// answer for the emulators' default identity in other tests.
const challengeClientID = "0c4a11e6-9e5d-4c7b-8f0a-5b3c2d1e0f9a"

// Key Vault's challenge names the resource a token is for. azkeys checks
// that the vault host lies under that resource's host, so that a server
// posing as a vault cannot ask for a token to something else; the
// adapter turns the check off for loopback vault hosts only, since the
// emulator there names https://vault.azure.net as Key Vault does.
func TestKeyVault_ChallengeResourceCheck(t *testing.T) {
	const (
		vaultScope = "https://vault.azure.net/.default"
		otherCloud = "https://vault.azure.cn" // a resource no Azure vault host below lies under
	)
	mismatch := func(resource string) string {
		return `challenge resource "` + resource + `" doesn't match the requested domain`
	}
	tests := []struct {
		name     string
		host     string // the vault host of the key asked for; P is the emulator vault's port
		resource string // replaces the challenge's resource; "" keeps Key Vault's
		// wantErr is in the error; "" wants the key read.
		wantErr    string
		wantStatus int      // of the *azcore.ResponseError wanted, if any
		wantScopes []string // the scopes a token was asked for
	}{
		{
			name: "Azure host, Key Vault's challenge: checked and passed",
			host: "kv1.vault.azure.net", wantScopes: []string{vaultScope},
		},
		{
			name: "Azure host, challenge for another resource: refused before any token",
			host: "kv1.vault.azure.net", resource: otherCloud, wantErr: mismatch(otherCloud),
		},
		{
			name: "name under .localhost: checked as any DNS name",
			host: "kv1.localhost:P", wantErr: mismatch("https://vault.azure.net"),
		},
		{
			name: "loopback address, Key Vault's challenge: not checked",
			host: "127.0.0.1:P", wantScopes: []string{vaultScope},
		},
		{
			name: "IPv6 loopback address, Key Vault's challenge: not checked",
			host: "[::1]:P", wantScopes: []string{vaultScope},
		},
		{
			name: "localhost, Key Vault's challenge: not checked",
			host: "localhost:P", wantScopes: []string{vaultScope},
		},
		{
			// The check is skipped, so the policy asks for a token to the
			// resource named; the emulated vault refuses its audience.
			name: "loopback address, challenge for another resource: not checked",
			host: "127.0.0.1:P", resource: otherCloud, wantErr: "401 Unauthorized",
			wantStatus: http.StatusUnauthorized, wantScopes: []string{otherCloud + "/.default"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu, err := emulator.Start(emulator.Options{ClientID: challengeClientID})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { emu.Close() })
			vault := emu.AddVault("kv1")
			v1, err := vault.CreateKey("cmk", emulator.KeyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, port, err := net.SplitHostPort(strings.TrimPrefix(vault.URL(), "https://"))
			if err != nil {
				t.Fatal(err)
			}

			client := vaultClient(vault.URL(), emu.CertPool(), tt.resource, "kv1.vault.azure.net", "kv1.localhost", "::1")
			co := azcore.ClientOptions{Transport: client, Retry: policy.RetryOptions{MaxRetries: -1}}
			cred, _, _ := testenv.Adapters(t, emu, co)
			rec := &scopeRecorder{TokenCredential: cred}
			keys := azure.NewKeyVault(rec, &azure.KeyVaultOptions{ClientOptions: co})

			ref := rotation.KeyRef{Vault: strings.ReplaceAll(tt.host, "P", port), Name: "cmk"}
			got, err := keys.Key(t.Context(), ref)

			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Key(%s): %v", ref, err)
			case tt.wantErr == "" && got.Ref.Version != v1.Version:
				t.Errorf("Key(%s): got version %q, want %q", ref, got.Ref.Version, v1.Version)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Key(%s): got error %v, want one containing %q", ref, err, tt.wantErr)
			}
			re, isResponse := errors.AsType[*azcore.ResponseError](err)
			switch {
			case tt.wantStatus == 0 && isResponse:
				t.Errorf("Key(%s): got Key Vault's %d, want the client to refuse the challenge first", ref, re.StatusCode)
			case tt.wantStatus != 0 && (!isResponse || re.StatusCode != tt.wantStatus):
				t.Errorf("Key(%s): got error %v, want Key Vault's %d", ref, err, tt.wantStatus)
			}
			if diff := cmp.Diff(tt.wantScopes, rec.Scopes()); diff != "" {
				t.Errorf("token scopes asked for (-want +got):\n%s", diff)
			}
		})
	}
}

// vaultClient returns a client that reaches the vault at vaultURL for
// every host in aliases too, as DNS would reach a real vault, trusting
// pool. When resource is set, it replaces the resource of every
// challenge the vault answers, as a server posing as the vault could.
func vaultClient(vaultURL string, pool *x509.CertPool, resource string, aliases ...string) *http.Client {
	addr := strings.TrimPrefix(vaultURL, "https://")
	var d net.Dialer
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, hostport string) (net.Conn, error) {
		if host, _, err := net.SplitHostPort(hostport); err == nil && slices.Contains(aliases, host) {
			hostport = addr
		}
		return d.DialContext(ctx, network, hostport)
	}
	// The emulator's certificate names localhost and the loopback
	// addresses only; the Host header still names the alias.
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: challengeRewriter{next: tr, resource: resource}}
}

// challengeRewriter replaces the resource of WWW-Authenticate
// challenges, when resource is set.
type challengeRewriter struct {
	next     http.RoundTripper
	resource string
}

var resourceParam = regexp.MustCompile(`resource="[^"]*"`)

func (c challengeRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil || c.resource == "" {
		return resp, err
	}
	if h := resp.Header.Get("WWW-Authenticate"); h != "" {
		resp.Header.Set("WWW-Authenticate", resourceParam.ReplaceAllLiteralString(h, `resource="`+c.resource+`"`))
	}
	return resp, nil
}

// scopeRecorder records the scopes tokens are asked for.
type scopeRecorder struct {
	azcore.TokenCredential

	mu     sync.Mutex
	scopes []string
}

func (s *scopeRecorder) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.mu.Lock()
	s.scopes = append(s.scopes, o.Scopes...)
	s.mu.Unlock()
	return s.TokenCredential.GetToken(ctx, o)
}

// Scopes returns the scopes asked for so far, in order.
func (s *scopeRecorder) Scopes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.scopes)
}
