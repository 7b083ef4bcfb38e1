package emulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
)

func TestIdentity_CredentialGetsToken(t *testing.T) {
	e := start(t)
	cred := credential(t, e, e.HTTPClient())
	for _, scope := range []string{"https://vault.azure.net/.default",
		"https://management.core.windows.net//.default"} {
		tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{scope}})
		if err != nil {
			t.Fatalf("GetToken(%s): %v", scope, err)
		}
		if tok.Token == "" || !tok.ExpiresOn.After(time.Now()) {
			t.Errorf("GetToken(%s): got token of %d bytes expiring %v, want a token expiring later", scope,
				len(tok.Token), tok.ExpiresOn)
		}
	}
}

func TestIdentity_SystemAssignedRefused(t *testing.T) {
	e := start(t)
	t.Setenv("IDENTITY_ENDPOINT", e.IdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", e.IdentityHeader())
	for name, id := range map[string]azidentity.ManagedIDKind{
		"system-assigned": nil,
		"unknown client":  azidentity.ClientID("11111111-2222-3333-4444-555555555555"),
	} {
		t.Run(name, func(t *testing.T) {
			cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
				ID: id, ClientOptions: azcore.ClientOptions{Transport: e.HTTPClient()},
			})
			if err != nil {
				t.Fatalf("NewManagedIdentityCredential: %v", err)
			}
			_, err = cred.GetToken(context.Background(),
				policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
			if err == nil || !strings.Contains(err.Error(), "Unable to load the proper Managed Identity") {
				t.Errorf("GetToken: got %v, want the missing identity error", err)
			}
		})
	}
}

func TestIdentity_Protocol(t *testing.T) {
	e := start(t)
	tests := []struct {
		name   string
		header string
		query  url.Values
		want   int
	}{
		{"ok", e.IdentityHeader(), url.Values{"api-version": {"2019-08-01"},
			"resource": {"https://vault.azure.net"}, "client_id": {e.ClientID()}}, 200},
		{"no header", "", url.Values{"api-version": {"2019-08-01"},
			"resource": {"https://vault.azure.net"}, "client_id": {e.ClientID()}}, 401},
		{"wrong header", "nope", url.Values{"api-version": {"2019-08-01"},
			"resource": {"https://vault.azure.net"}, "client_id": {e.ClientID()}}, 401},
		{"old api-version", e.IdentityHeader(), url.Values{"api-version": {"2017-09-01"},
			"resource": {"https://vault.azure.net"}, "client_id": {e.ClientID()}}, 400},
		{"no resource", e.IdentityHeader(), url.Values{"api-version": {"2019-08-01"},
			"client_id": {e.ClientID()}}, 400},
		{"no client_id", e.IdentityHeader(), url.Values{"api-version": {"2019-08-01"},
			"resource": {"https://vault.azure.net"}}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.IdentityEndpoint()+"?"+tt.query.Encode(), nil)
			if tt.header != "" {
				req.Header.Set("X-IDENTITY-HEADER", tt.header)
			}
			resp, err := e.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("got status %d, want %d", resp.StatusCode, tt.want)
			}
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("decode body: %v", err)
			}
			if tt.want != 200 {
				if body["message"] == nil {
					t.Errorf("got body %v, want a message", body)
				}
				return
			}
			exp, ok := body["expires_on"].(string)
			if _, err := strconv.ParseInt(exp, 10, 64); !ok || err != nil {
				t.Errorf("got expires_on %#v, want a string of Unix seconds", body["expires_on"])
			}
			if body["resource"] != "https://vault.azure.net" || body["token_type"] != "Bearer" ||
				body["client_id"] != e.ClientID() || body["access_token"] == "" {
				t.Errorf("got body %v, want the token response", body)
			}
		})
	}
}

// A 500 from the identity endpoint is retried by azcore's retry policy
// inside ManagedIdentityCredential, after a wait, and the token of the
// second answer is returned; without retries the 500 is the error.
func TestIdentity_FaultRetried(t *testing.T) {
	tests := []struct {
		name       string
		retry      policy.RetryOptions
		wantStatus []int // identity requests, in order
	}{
		{"default retries", policy.RetryOptions{}, []int{500, 200}},
		{"no retries", noRetry(), []int{500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startUncached(t)
			t.Setenv("IDENTITY_ENDPOINT", e.IdentityEndpoint())
			t.Setenv("IDENTITY_HEADER", e.IdentityHeader())
			cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
				ID:            azidentity.ClientID(e.ClientID()),
				ClientOptions: azcore.ClientOptions{Transport: inProcess(e), Retry: tt.retry},
			})
			if err != nil {
				t.Fatal(err)
			}
			synctest.Test(t, func(t *testing.T) {
				e.InjectFault(emulator.Fault{Service: "identity", Status: 500, Times: 1})
				start := time.Now()
				tok, err := cred.GetToken(context.Background(),
					policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
				waited := time.Since(start)

				var got []int
				for _, r := range e.Requests() {
					got = append(got, r.Status)
				}
				if diff := cmp.Diff(tt.wantStatus, got); diff != "" {
					t.Errorf("identity requests mismatch (-want +got):\n%s", diff)
				}
				if len(tt.wantStatus) == 1 {
					var afe *azidentity.AuthenticationFailedError
					if !errors.As(err, &afe) || afe.RawResponse == nil || afe.RawResponse.StatusCode != 500 {
						t.Errorf("GetToken: got %v, want an AuthenticationFailedError with status 500", err)
					}
					return
				}
				if err != nil || tok.Token == "" {
					t.Fatalf("GetToken: got %v, want a token after the retry", err)
				}
				if waited <= 0 {
					t.Errorf("got the retry after %v, want it after the retry policy's delay", waited)
				}
			})
		})
	}
}
