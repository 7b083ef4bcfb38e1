package emulator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// server is the part of FluidRelayServer the tests read.
type server struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	Location   string `json:"location"`
	Properties struct {
		ProvisioningState string `json:"provisioningState"`
		StorageSKU        string `json:"storagesku"`
		Encryption        *struct {
			CMK *struct {
				KeyEncryptionKeyURL string `json:"keyEncryptionKeyUrl"`
			} `json:"customerManagedKeyEncryption"`
		} `json:"encryption"`
	} `json:"properties"`
}

func (s server) keyURL() string {
	if s.Properties.Encryption == nil || s.Properties.Encryption.CMK == nil {
		return ""
	}
	return s.Properties.Encryption.CMK.KeyEncryptionKeyURL
}

func keyPatch(url string) map[string]any {
	return map[string]any{"properties": map[string]any{"encryption": map[string]any{
		"customerManagedKeyEncryption": map[string]any{"keyEncryptionKeyUrl": url}}}}
}

func TestARM_GetPatchDelete(t *testing.T) {
	e := start(t)
	v := e.AddVault("contoso")
	k1, _ := v.CreateKey("fluid-cmk", emulator.KeyOptions{})
	k2, _ := v.RotateKey("fluid-cmk")
	id, err := e.PutServer(emulator.ServerSpec{Name: "relay-eu", KeyURL: k1.KID})
	if err != nil {
		t.Fatal(err)
	}
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()

	var got server
	if _, err := armCall(ctx, c, http.MethodGet, id, nil, &got); err != nil {
		t.Fatalf("GET: %v", err)
	}
	if got.ID != id || got.Type != "Microsoft.FluidRelay/fluidRelayServers" || got.keyURL() != k1.KID ||
		got.Properties.ProvisioningState != "Succeeded" {
		t.Errorf("GET: got %+v, want %s on %s", got, id, k1.KID)
	}

	var patched server
	if _, err := armCall(ctx, c, http.MethodPatch, id, keyPatch(k2.KID), &patched); err != nil {
		t.Fatalf("PATCH: %v", err)
	}
	if patched.keyURL() != k2.KID {
		t.Errorf("PATCH: got key URL %s, want %s", patched.keyURL(), k2.KID)
	}
	if u, ok := e.ServerKeyURL(id); !ok || u != k2.KID {
		t.Errorf("ServerKeyURL: got %q %v, want %q", u, ok, k2.KID)
	}

	resp, err := armCall(ctx, c, http.MethodDelete, id, nil, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: got %v, want 200", err)
	}
	resp, err = armCall(ctx, c, http.MethodDelete, id, nil, nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE again: got %v, want 204", err)
	}
	_, err = armCall(ctx, c, http.MethodGet, id, nil, nil)
	if status, code := errorCode(t, err); status != 404 || code != "ResourceNotFound" {
		t.Errorf("GET deleted: got %d %s, want 404 ResourceNotFound", status, code)
	}
}

func TestARM_PutAndList(t *testing.T) {
	e, err := emulator.Start(emulator.Options{ListPageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()
	sub := "11111111-0000-0000-0000-000000000001"
	for _, rg := range []string{"rg-a", "rg-a", "rg-a", "rg-b"} {
		name := "relay-" + rg + "-" + time.Now().Format("150405.000000000")[7:]
		id := emulator.ServerID(sub, rg, name)
		body := map[string]any{"location": "westus", "properties": map[string]any{"storagesku": "basic"}}
		var got server
		resp, err := armCall(ctx, c, http.MethodPut, id, body, &got)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT %s: %v", id, err)
		}
		if got.ID != id || got.Properties.StorageSKU != "basic" {
			t.Errorf("PUT: got %+v, want %s with storagesku basic", got, id)
		}
	}

	tests := []struct {
		scope string
		want  int
	}{
		{"/subscriptions/" + sub, 4},
		{"/subscriptions/" + sub + "/resourceGroups/rg-a", 3},
		{"/subscriptions/" + sub + "/resourceGroups/rg-b", 1},
		{"/subscriptions/" + sub + "/resourceGroups/rg-none", 0},
	}
	for _, tt := range tests {
		t.Run(tt.scope, func(t *testing.T) {
			n := 0
			link := c.Endpoint() + tt.scope + "/providers/Microsoft.FluidRelay/fluidRelayServers"
			for pages := 0; link != ""; pages++ {
				var page struct {
					Value    []server `json:"value"`
					NextLink *string  `json:"nextLink"`
				}
				if pages > 0 {
					// nextLink is absolute and carries the api-version.
					if _, err := armCallVersion(ctx, c, http.MethodGet, link, "", nil, &page); err != nil {
						t.Fatalf("page %d: %v", pages, err)
					}
				} else if _, err := armCall(ctx, c, http.MethodGet, link, nil, &page); err != nil {
					t.Fatalf("list: %v", err)
				}
				if page.NextLink == nil {
					t.Fatalf("got nextLink null, want a string")
				}
				n += len(page.Value)
				link = *page.NextLink
			}
			if n != tt.want {
				t.Errorf("got %d servers, want %d", n, tt.want)
			}
		})
	}
}

func TestARM_RequestErrors(t *testing.T) {
	e := start(t)
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay"})
	cred := credential(t, e, e.HTTPClient())
	c := armClient(t, e, cred, e.HTTPClient())
	ctx := context.Background()
	tests := []struct {
		name       string
		method     string
		version    string
		body       any
		wantStatus int
		wantCode   string
	}{
		{"missing api-version", http.MethodGet, "", nil, 400, "MissingApiVersionParameter"},
		{"wrong api-version", http.MethodGet, "2021-03-12-preview", nil, 400, "InvalidApiVersionParameter"},
		// ARM answers InvalidRequestContent both for a body that is not
		// JSON and for JSON of the wrong shape.
		{"malformed PATCH", http.MethodPatch, emulator.APIVersion, rawJSON(`{"properties":`), 400,
			"InvalidRequestContent"},
		{"malformed PUT", http.MethodPut, emulator.APIVersion, rawJSON(`{"location":"westus",`), 400,
			"InvalidRequestContent"},
		{"PATCH of the wrong shape", http.MethodPatch, emulator.APIVersion, "{", 400,
			"InvalidRequestContent"},
		{"PUT of the wrong shape", http.MethodPut, emulator.APIVersion, rawJSON(`["westus"]`), 400,
			"InvalidRequestContent"},
		{"PUT without location", http.MethodPut, emulator.APIVersion, map[string]any{}, 400,
			"LocationRequired"},
		{"POST on a server", http.MethodPost, emulator.APIVersion, nil, 405, "HttpMethodNotAllowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.ResetRequests()
			_, err := armCallVersion(ctx, c, tt.method, id, tt.version, tt.body, nil)
			if status, code := errorCode(t, err); status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %s, want %d %s", status, code, tt.wantStatus, tt.wantCode)
			}
			if raw, ok := tt.body.(rawJSON); ok {
				if reqs := e.Requests(); len(reqs) != 1 || string(reqs[0].Body) != string(raw) {
					t.Errorf("got requests %+v, want one with body %s", reqs, raw)
				}
			}
		})
	}

	kvTok, err := cred.GetToken(ctx, policy.TokenRequestOptions{
		Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, auth, wantCode string
	}{
		{"no token", "", "AuthenticationFailed"},
		{"garbage token", "Bearer garbage", "InvalidAuthenticationToken"},
		{"token for Key Vault", "Bearer " + kvTok.Token, "InvalidAuthenticationTokenAudience"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.ARMEndpoint()+id+"?api-version="+
				emulator.APIVersion, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := e.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct{ Code, Message string }
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("decode the error body: %v", err)
			}
			if resp.StatusCode != 401 || body.Error.Code != tt.wantCode || body.Error.Message == "" {
				t.Errorf("got %d %s %q, want 401 %s with a message", resp.StatusCode,
					body.Error.Code, body.Error.Message, tt.wantCode)
			}
		})
	}
}
