package emulator_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
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
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// startUncached starts an emulator whose identity has a client ID of its
// own, so that azidentity's process-wide token cache holds nothing for it
// and the first GetToken reaches the identity endpoint.
func startUncached(t *testing.T) *emulator.Emulator {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	h := hex.EncodeToString(b)
	e, err := emulator.Start(emulator.Options{
		ClientID: h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// inProcess is the emulator's in-process transport as an azcore
// transporter.
func inProcess(e *emulator.Emulator) policy.Transporter {
	return e.InProcessTransport().(policy.Transporter)
}

// staticToken is a credential that always presents one token, as a client
// holding a token the service no longer accepts does.
type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// Tokens issued inside a synctest bubble expire a day after the bubble's
// clock starts, in 2000; outside the bubble both services refuse them as
// expired.
func TestExpiredToken(t *testing.T) {
	e := startUncached(t)
	v := e.AddVault("expired")
	if _, err := v.CreateKey("k", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay"})
	cred := credential(t, e, inProcess(e))

	var armTok, kvTok azcore.AccessToken
	synctest.Test(t, func(t *testing.T) {
		var err error
		ctx := context.Background()
		armTok, err = cred.GetToken(ctx, policy.TokenRequestOptions{
			Scopes: []string{"https://management.core.windows.net//.default"}})
		if err != nil {
			t.Fatal(err)
		}
		kvTok, err = cred.GetToken(ctx, policy.TokenRequestOptions{
			Scopes: []string{"https://vault.azure.net/.default"}})
		if err != nil {
			t.Fatal(err)
		}
	})
	if time.Now().Before(armTok.ExpiresOn) || time.Now().Before(kvTok.ExpiresOn) {
		t.Fatalf("got tokens expiring %v and %v, want both in the past", armTok.ExpiresOn,
			kvTok.ExpiresOn)
	}
	ctx := context.Background()

	t.Run("Resource Manager", func(t *testing.T) {
		c := armClient(t, e, staticToken(armTok.Token), e.HTTPClient())
		_, err := armCall(ctx, c, http.MethodGet, id, nil, nil)
		if status, code := errorCode(t, err); status != 401 || code != "ExpiredAuthenticationToken" {
			t.Errorf("got %d %s, want 401 ExpiredAuthenticationToken", status, code)
		}
	})
	t.Run("Key Vault", func(t *testing.T) {
		c := keysClient(t, v.URL(), staticToken(kvTok.Token), e.HTTPClient())
		_, err := c.GetKey(ctx, "k", "", nil)
		var re *azcore.ResponseError
		if !errors.As(err, &re) {
			t.Fatalf("GetKey: got %v, want *azcore.ResponseError", err)
		}
		raw, err := runtime.Payload(re.RawResponse)
		if err != nil {
			t.Fatal(err)
		}
		var got, want any
		json.Unmarshal(raw, &got)
		json.Unmarshal([]byte(`{"error":{"code":"Unauthorized","message":"AKV10032: Token has expired."}}`),
			&want)
		if re.StatusCode != 401 {
			t.Errorf("got status %d, want 401", re.StatusCode)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("error body mismatch (-want +got):\n%s", diff)
		}
		if h := re.RawResponse.Header.Get("WWW-Authenticate"); !strings.Contains(h, `resource="https://vault.azure.net"`) {
			t.Errorf("got WWW-Authenticate %q, want the challenge", h)
		}
	})
}

func TestARM_PathAndPagingErrors(t *testing.T) {
	e, err := emulator.Start(emulator.Options{ListPageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, name := range []string{"relay-a", "relay-b"} {
		if _, err := e.PutServer(emulator.ServerSpec{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()
	rg := "/subscriptions/" + emulator.DefaultSubscription + "/resourceGroups/" +
		emulator.DefaultResourceGroup
	list := c.Endpoint() + rg + "/providers/Microsoft.FluidRelay/fluidRelayServers"
	skip := func(s string) string {
		return list + "?" + url.Values{"$skiptoken": {s}}.Encode()
	}
	b64 := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name       string
		path       string
		wantStatus int
		wantCode   string // "" = 200
	}{
		{"unknown resource type", rg + "/providers/Microsoft.FluidRelay/fluidRelayWidgets/relay-a",
			404, "InvalidResourceType"},
		{"unknown action", rg + "/providers/Microsoft.FluidRelay/fluidRelayServers/relay-a/restart",
			404, "InvalidResourceType"},
		{"another provider", rg + "/providers/Microsoft.KeyVault/vaults/kv", 404, "InvalidResourceType"},
		{"skip token not base64url", skip("!!"), 400, "InvalidSkipToken"},
		{"skip token not a number", skip(b64([]byte("abc"))), 400, "InvalidSkipToken"},
		{"negative skip token", skip(b64([]byte("-1"))), 400, "InvalidSkipToken"},
		{"valid skip token", skip(b64([]byte("1"))), 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var page struct {
				Value []server `json:"value"`
			}
			_, err := armCall(ctx, c, http.MethodGet, tt.path, nil, &page)
			if tt.wantCode == "" {
				if err != nil || len(page.Value) != 1 || page.Value[0].Name != "relay-b" {
					t.Errorf("got %v %+v, want the second page, relay-b", err, page.Value)
				}
				return
			}
			if status, code := errorCode(t, err); status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %s, want %d %s", status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

// setQuery is a per-call policy that sets one query parameter, for
// parameters azkeys has no option for.
type setQuery struct{ name, value string }

func (p setQuery) Do(req *policy.Request) (*http.Response, error) {
	q := req.Raw().URL.Query()
	q.Set(p.name, p.value)
	req.Raw().URL.RawQuery = q.Encode()
	return req.Next()
}

func TestKeyVault_ListKeys(t *testing.T) {
	e := start(t)
	v := e.AddVault("list")
	want := map[string]bool{}
	for i := range 30 {
		name := "key-" + strconv.Itoa(i)
		if _, err := v.CreateKey(name, emulator.KeyOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := v.RotateKey(name); err != nil {
			t.Fatal(err)
		}
		want[name] = i != 7
	}
	if err := v.SetEnabled("key-7", "", false); err != nil {
		t.Fatal(err)
	}
	cred := credential(t, e, e.HTTPClient())
	ctx := context.Background()

	tests := []struct {
		name      string
		policies  []policy.Policy
		wantPages int
	}{
		{"default page size", nil, 2},
		{"maxresults 7", []policy.Policy{setQuery{"maxresults", "7"}}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := azkeys.NewClient(v.URL(), cred, &azkeys.ClientOptions{
				ClientOptions: azcore.ClientOptions{Transport: e.HTTPClient(), Retry: noRetry(),
					PerCallPolicies: tt.policies},
				DisableChallengeResourceVerification: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			got, pages := map[string]bool{}, 0
			for pager := c.NewListKeyPropertiesPager(nil); pager.More(); pages++ {
				p, err := pager.NextPage(ctx)
				if err != nil {
					t.Fatalf("NextPage: %v", err)
				}
				for _, k := range p.Value {
					if k.KID.Version() != "" {
						t.Errorf("listed kid %s, want the versionless kid", *k.KID)
					}
					got[k.KID.Name()] = *k.Attributes.Enabled
				}
			}
			if pages != tt.wantPages {
				t.Errorf("got %d pages, want %d", pages, tt.wantPages)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("listed keys mismatch (-want +got):\n%s", diff)
			}
		})
	}

	for _, bad := range []string{"0", "26", "-1", "many"} {
		t.Run("maxresults "+bad, func(t *testing.T) {
			c, err := azkeys.NewClient(v.URL(), cred, &azkeys.ClientOptions{
				ClientOptions: azcore.ClientOptions{Transport: e.HTTPClient(), Retry: noRetry(),
					PerCallPolicies: []policy.Policy{setQuery{"maxresults", bad}}},
				DisableChallengeResourceVerification: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			for name, list := range map[string]func() error{
				"keys": func() error {
					_, err := c.NewListKeyPropertiesPager(nil).NextPage(ctx)
					return err
				},
				"versions": func() error {
					_, err := c.NewListKeyPropertiesVersionsPager("key-1", nil).NextPage(ctx)
					return err
				},
			} {
				if status, code := errorCode(t, list()); status != 400 || code != "BadParameter" {
					t.Errorf("list %s: got %d %s, want 400 BadParameter", name, status, code)
				}
			}
		})
	}
}

func TestKeyVault_DeleteKey(t *testing.T) {
	e := start(t)
	v := e.AddVault("delete")
	if _, err := v.CreateKey("k", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	cur, _ := v.RotateKey("k")
	if _, err := v.CreateKey("other", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	c := keysClient(t, v.URL(), credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()

	before := time.Now().Truncate(time.Second)
	del, err := c.DeleteKey(ctx, "k", nil)
	if err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	if string(*del.Key.KID) != cur.KID || *del.RecoveryID != v.URL()+"/deletedkeys/k" {
		t.Errorf("got kid %s recovery ID %s, want %s and %s", *del.Key.KID, *del.RecoveryID,
			cur.KID, v.URL()+"/deletedkeys/k")
	}
	if del.DeletedDate.Before(before) || !del.ScheduledPurgeDate.Equal(del.DeletedDate.Add(90*24*time.Hour)) {
		t.Errorf("got deleted %v, purge %v, want now and 90 days later", del.DeletedDate,
			del.ScheduledPurgeDate)
	}

	if status, code := errorCode(t, func() error { _, err := c.GetKey(ctx, "k", "", nil); return err }()); status != 404 || code != "KeyNotFound" {
		t.Errorf("GetKey after delete: got %d %s, want 404 KeyNotFound", status, code)
	}
	if status, code := errorCode(t, func() error { _, err := c.DeleteKey(ctx, "k", nil); return err }()); status != 404 || code != "KeyNotFound" {
		t.Errorf("DeleteKey again: got %d %s, want 404 KeyNotFound", status, code)
	}
	var names []string
	for pager := c.NewListKeyPropertiesPager(nil); pager.More(); {
		p, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range p.Value {
			names = append(names, k.KID.Name())
		}
	}
	if diff := cmp.Diff([]string{"other"}, names); diff != "" {
		t.Errorf("keys after delete mismatch (-want +got):\n%s", diff)
	}
	if _, err := v.Versions("k"); !errors.Is(err, emulator.ErrNotFound) {
		t.Errorf("Versions after delete: got %v, want ErrNotFound", err)
	}
}

// Key Vault answers any api-version, as the service does for the versions
// azkeys releases send.
func TestKeyVault_AnyAPIVersion(t *testing.T) {
	e := start(t)
	v := e.AddVault("versions")
	info, err := v.CreateKey("k", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if _, err := v.CreateKey("k", emulator.KeyOptions{}); err != nil {
			t.Fatalf("version %d: %v", i, err)
		}
	}
	cred := credential(t, e, e.HTTPClient())
	for _, version := range []string{"7.4", "7.6", "2025-07-01", "2099-01-01-preview"} {
		t.Run(version, func(t *testing.T) {
			c, err := azkeys.NewClient(v.URL(), cred, &azkeys.ClientOptions{
				ClientOptions: azcore.ClientOptions{Transport: e.HTTPClient(), Retry: noRetry(),
					APIVersion: version},
				DisableChallengeResourceVerification: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			e.ResetRequests()
			got, err := c.GetKey(ctx, "k", info.Version, nil)
			if err != nil {
				t.Fatalf("GetKey: %v", err)
			}
			if string(*got.Key.KID) != info.KID {
				t.Errorf("got kid %s, want %s", *got.Key.KID, info.KID)
			}
			pages := 0
			for pager := c.NewListKeyPropertiesVersionsPager("k", nil); pager.More(); pages++ {
				if _, err := pager.NextPage(ctx); err != nil {
					t.Fatalf("NextPage %d: %v", pages, err)
				}
			}
			if pages != 2 {
				t.Errorf("got %d pages, want 2", pages)
			}
			for _, r := range e.Requests() {
				q, _ := url.ParseQuery(r.Query)
				if got := q.Get("api-version"); got != version {
					t.Errorf("%s %s: got api-version %q, want %q", r.Method, r.Path, got, version)
				}
			}
		})
	}
}
