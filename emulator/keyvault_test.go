package emulator_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
)

var versionRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestKeyVault_CreateGetRotate(t *testing.T) {
	e := start(t)
	v := e.AddVault("contoso")
	c := keysClient(t, v.URL(), credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()

	exp := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	created, err := c.CreateKey(ctx, "fluid-cmk", azkeys.CreateKeyParameters{
		Kty:           to.Ptr(azkeys.KeyTypeRSA),
		KeySize:       to.Ptr[int32](3072),
		KeyAttributes: &azkeys.KeyAttributes{Expires: &exp},
	}, nil)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	first := created.Key.KID.Version()
	if !versionRE.MatchString(first) {
		t.Errorf("got version %q, want 32 lower-case hex digits", first)
	}
	if got := len(created.Key.N); got != 384 {
		t.Errorf("got modulus of %d bytes, want 384", got)
	}
	if got := created.Attributes.Expires; got == nil || !got.Equal(exp) {
		t.Errorf("got expiry %v, want %v", got, exp)
	}
	if !hasOp(created.Key.KeyOps, "wrapKey") || !hasOp(created.Key.KeyOps, "unwrapKey") {
		t.Errorf("got key_ops %v, want wrapKey and unwrapKey", created.Key.KeyOps)
	}

	rotated, err := c.RotateKey(ctx, "fluid-cmk", nil)
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	second := rotated.Key.KID.Version()
	if second == first {
		t.Fatalf("got the same version %q after rotation", second)
	}
	if !rotated.Attributes.Created.After(*created.Attributes.Created) {
		t.Errorf("got created %v after %v, want strictly later", rotated.Attributes.Created,
			created.Attributes.Created)
	}

	for _, version := range []string{"", second} {
		got, err := c.GetKey(ctx, "fluid-cmk", version, nil)
		if err != nil {
			t.Fatalf("GetKey(%q): %v", version, err)
		}
		if got.Key.KID.Version() != second || got.Key.KID.Name() != "fluid-cmk" {
			t.Errorf("GetKey(%q): got kid %s, want version %s", version, *got.Key.KID, second)
		}
	}
	old, err := c.GetKey(ctx, "fluid-cmk", first, nil)
	if err != nil {
		t.Fatalf("GetKey(first): %v", err)
	}
	if got := string(*old.Key.KID); got != v.URL()+"/keys/fluid-cmk/"+first {
		t.Errorf("got kid %s, want %s", got, v.URL()+"/keys/fluid-cmk/"+first)
	}
}

func TestKeyVault_GoAPI(t *testing.T) {
	e := start(t)
	v := e.AddVault("kv1")
	if e.Vault("KV1") != v {
		t.Fatalf("Vault(KV1): got another vault, want the one added")
	}
	a, err := v.CreateKey("k", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := v.CreateKey("k", emulator.KeyOptions{Type: "EC"})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Created.Equal(a.Created.Add(time.Second)) && !b.Created.After(a.Created) {
		t.Errorf("got created %v then %v, want strictly increasing", a.Created, b.Created)
	}
	if err := v.SetEnabled("k", a.Version, false); err != nil {
		t.Fatal(err)
	}

	c := keysClient(t, v.URL(), credential(t, e, e.HTTPClient()), e.HTTPClient())
	_, err = c.GetKey(context.Background(), "k", a.Version, nil)
	if status, code := errorCode(t, err); status != http.StatusForbidden || code != "Forbidden" {
		t.Errorf("GetKey(disabled): got %d %s, want 403 Forbidden", status, code)
	}
	cur, err := c.GetKey(context.Background(), "k", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *cur.Key.Kty != azkeys.KeyTypeEC || *cur.Key.Crv != azkeys.CurveNameP256 || len(cur.Key.X) != 32 {
		t.Errorf("got current %s %v with x of %d bytes, want EC P-256", *cur.Key.Kty, cur.Key.Crv,
			len(cur.Key.X))
	}
	if _, err := v.RotateKey("missing"); err == nil {
		t.Errorf("RotateKey(missing): got nil error, want not found")
	}
}

func TestKeyVault_ListVersionsPages(t *testing.T) {
	e := start(t)
	v := e.AddVault("paged")
	want := map[string]bool{}
	for range 30 {
		info, err := v.CreateKey("many", emulator.KeyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want[info.Version] = true
	}
	c := keysClient(t, v.URL(), credential(t, e, e.HTTPClient()), e.HTTPClient())
	e.ResetRequests()
	pager := c.NewListKeyPropertiesVersionsPager("many", nil)
	got, pages := map[string]bool{}, 0
	for pager.More() {
		p, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatalf("NextPage: %v", err)
		}
		pages++
		for _, k := range p.Value {
			got[k.KID.Version()] = true
		}
	}
	if pages != 2 || len(got) != 30 {
		t.Errorf("got %d versions on %d pages, want 30 on 2", len(got), pages)
	}
	for k := range want {
		if !got[k] {
			t.Errorf("version %s missing from the list", k)
		}
	}
}

func TestKeyVault_Errors(t *testing.T) {
	e := start(t)
	v := e.AddVault("errs")
	if _, err := v.CreateKey("k", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	c := keysClient(t, v.URL(), credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()
	tests := []struct {
		name       string
		call       func() error
		wantStatus int
		wantCode   string
	}{
		{"get missing key", func() error { _, err := c.GetKey(ctx, "nope", "", nil); return err },
			404, "KeyNotFound"},
		{"get missing version", func() error {
			_, err := c.GetKey(ctx, "k", strings.Repeat("0", 32), nil)
			return err
		}, 404, "KeyNotFound"},
		{"rotate missing key", func() error { _, err := c.RotateKey(ctx, "nope", nil); return err },
			404, "KeyNotFound"},
		{"create oct", func() error {
			_, err := c.CreateKey(ctx, "k2", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeOct)}, nil)
			return err
		}, 400, "BadParameter"},
		{"list missing key", func() error {
			_, err := c.NewListKeyPropertiesVersionsPager("nope", nil).NextPage(ctx)
			return err
		}, 404, "KeyNotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := errorCode(t, tt.call())
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %s, want %d %s", status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestKeyVault_Challenge(t *testing.T) {
	e := start(t)
	v := e.AddVault("chal")
	if _, err := v.CreateKey("k", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	armTok, err := credential(t, e, e.HTTPClient()).GetToken(context.Background(),
		policy.TokenRequestOptions{Scopes: []string{"https://management.core.windows.net//.default"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, auth, body string
	}{
		{"no token", "", ""},
		{"no token, invalid body", "", "{not json"},
		{"garbage token", "Bearer abc", ""},
		{"token for ARM", "Bearer " + armTok.Token, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, v.URL()+"/keys/k/create?api-version=7.4",
				strings.NewReader(tt.body))
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := e.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			wantHdr := `Bearer authorization="https://login.microsoftonline.com/` + emulator.TenantID +
				`", resource="https://vault.azure.net"`
			if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != wantHdr {
				t.Errorf("got %d %q, want 401 %q", resp.StatusCode,
					resp.Header.Get("WWW-Authenticate"), wantHdr)
			}
			var body struct {
				Error struct{ Code, Message string }
			}
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &body); err != nil || body.Error.Code != "Unauthorized" {
				t.Errorf("got body %s, want Key Vault's Unauthorized error", b)
			}
		})
	}
}

func TestKeyVault_WireShape(t *testing.T) {
	e := start(t)
	v := e.AddVault("wire")
	info, err := v.CreateKey("k", emulator.KeyOptions{NotBefore: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := credential(t, e, e.HTTPClient()).GetToken(context.Background(),
		policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/keys/k", "/keys/k/", "/keys/k/" + info.Version} {
		req, _ := http.NewRequest(http.MethodGet, v.URL()+path+"?api-version=2025-07-01", nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err := e.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var raw struct {
			Key struct {
				KID string `json:"kid"`
				N   string `json:"n"`
				E   string `json:"e"`
			} `json:"key"`
			Attributes map[string]any `json:"attributes"`
		}
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
		if raw.Key.KID != info.KID || raw.Key.E != "AQAB" || strings.ContainsAny(raw.Key.N, "=+/") {
			t.Errorf("GET %s: got kid %s e %s n %.10s…, want %s AQAB unpadded base64url", path,
				raw.Key.KID, raw.Key.E, raw.Key.N, info.KID)
		}
		if _, err := base64.RawURLEncoding.DecodeString(raw.Key.N); err != nil {
			t.Errorf("GET %s: n is not unpadded base64url: %v", path, err)
		}
		if raw.Attributes["nbf"] != float64(1700000000) ||
			raw.Attributes["created"] != float64(info.Created.Unix()) {
			t.Errorf("GET %s: got attributes %v, want integer nbf and created", path, raw.Attributes)
		}
	}
}

func hasOp(ops []*azkeys.KeyOperation, want azkeys.KeyOperation) bool {
	for _, op := range ops {
		if op != nil && *op == want {
			return true
		}
	}
	return false
}

// Key Vault refuses to describe a disabled version, the current one
// included, with 403 and the inner code KeyDisabled; listing still shows
// it, disabled, and it can be enabled again.
func TestKeyVault_DisabledVersionRefused(t *testing.T) {
	e := start(t)
	v := e.AddVault("off")
	a, _ := v.CreateKey("k", emulator.KeyOptions{})
	b, _ := v.CreateKey("k", emulator.KeyOptions{})
	c := keysClient(t, v.URL(), credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()
	var wantBody any
	json.Unmarshal([]byte(`{"error":{"code":"Forbidden","message":"Operation get is not allowed `+
		`on a disabled key.","innererror":{"code":"KeyDisabled"}}}`), &wantBody)

	tests := []struct {
		name      string
		disable   string // version to disable
		get       string // version to read; "" the current one
		wantError bool
	}{
		{"older version", a.Version, a.Version, true},
		{"current version by name", b.Version, "", true},
		{"current version by version", b.Version, b.Version, true},
		{"enabled version beside a disabled one", a.Version, b.Version, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, ver := range []string{a.Version, b.Version} {
				if err := v.SetEnabled("k", ver, ver != tt.disable); err != nil {
					t.Fatal(err)
				}
			}
			got, err := c.GetKey(ctx, "k", tt.get, nil)
			if !tt.wantError {
				if err != nil || !*got.Attributes.Enabled {
					t.Fatalf("GetKey(%q): got %v, want an enabled version", tt.get, err)
				}
				return
			}
			var re *azcore.ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("GetKey(%q): got %v, want *azcore.ResponseError", tt.get, err)
			}
			if re.StatusCode != http.StatusForbidden || re.ErrorCode != "Forbidden" {
				t.Errorf("GetKey(%q): got %d %s, want 403 Forbidden", tt.get, re.StatusCode, re.ErrorCode)
			}
			raw, err := runtime.Payload(re.RawResponse)
			if err != nil {
				t.Fatal(err)
			}
			var body any
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("decode %s: %v", raw, err)
			}
			if diff := cmp.Diff(wantBody, body); diff != "" {
				t.Errorf("GetKey(%q): body mismatch (-want +got):\n%s", tt.get, diff)
			}

			enabled := map[string]bool{}
			pager := c.NewListKeyPropertiesVersionsPager("k", nil)
			for pager.More() {
				page, err := pager.NextPage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range page.Value {
					enabled[p.KID.Version()] = *p.Attributes.Enabled
				}
			}
			want := map[string]bool{a.Version: tt.disable != a.Version, b.Version: tt.disable != b.Version}
			if diff := cmp.Diff(want, enabled); diff != "" {
				t.Errorf("listed versions mismatch (-want +got):\n%s", diff)
			}
		})
	}

	// Enabling a disabled version is allowed, and it can be read again.
	on := true
	if _, err := c.UpdateKey(ctx, "k", a.Version, azkeys.UpdateKeyParameters{
		KeyAttributes: &azkeys.KeyAttributes{Enabled: &on}}, nil); err != nil {
		t.Fatalf("UpdateKey(enable): %v", err)
	}
	if _, err := c.GetKey(ctx, "k", a.Version, nil); err != nil {
		t.Errorf("GetKey after enabling: %v", err)
	}
}

// A vault reached by one host can name another in its kids, as one reached
// through an alias does; Fluid Relay finds it by either.
func TestKeyVault_KeyIDHost(t *testing.T) {
	e := start(t)
	v := e.AddVault("aliased")
	before, _ := v.CreateKey("k", emulator.KeyOptions{})
	const host = "cmk.privatelink.vaultcore.azure.net"
	v.SetKeyIDHost(host)
	after, err := v.CreateKey("k", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := keysClient(t, v.URL(), credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()

	wantKID := "https://" + host + "/keys/k/" + after.Version
	if after.KID != wantKID {
		t.Errorf("CreateKey: got kid %s, want %s", after.KID, wantKID)
	}
	got, err := c.GetKey(ctx, "k", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(*got.Key.KID) != wantKID {
		t.Errorf("GetKey: got kid %s, want %s", *got.Key.KID, wantKID)
	}
	pager := c.NewListKeyPropertiesVersionsPager("k", nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Value {
			if h := strings.TrimPrefix(string(*p.KID), "https://"); !strings.HasPrefix(h, host+"/keys/k/") {
				t.Errorf("listed kid %s, want host %s", *p.KID, host)
			}
		}
	}
	if ev := e.KeyEvent(emulator.KeyNewVersionCreated, after, v.Name()); ev.Data.ID != wantKID {
		t.Errorf("event: got Id %s, want %s", ev.Data.ID, wantKID)
	}

	// Fluid Relay accepts the version by the kid's host and by the endpoint.
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay", KeyURL: before.KID})
	ac := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	for _, u := range []string{after.KID, v.URL() + "/keys/k/" + before.Version} {
		if _, err := armCall(ctx, ac, http.MethodPatch, id, keyPatch(u), nil); err != nil {
			t.Errorf("PATCH to %s: %v", u, err)
		}
	}

	var st emulator.State
	control(t, e, "GET", "/state", nil, &st)
	if st.Vaults[0].KeyIDHost != host {
		t.Errorf("state: got keyIdHost %q, want %q", st.Vaults[0].KeyIDHost, host)
	}
	if s := control(t, e, "PATCH", "/vaults/aliased", map[string]string{"keyIdHost": ""}, nil); s != http.StatusNoContent {
		t.Fatalf("PATCH /vaults/aliased: got %d, want 204", s)
	}
	if got, _ := c.GetKey(ctx, "k", "", nil); string(*got.Key.KID) != v.URL()+"/keys/k/"+after.Version {
		t.Errorf("after restoring: got kid %s, want %s", *got.Key.KID, v.URL()+"/keys/k/"+after.Version)
	}
}

// UpdateKey changes the attributes it sends: an absent one stays, and a
// null nbf or exp (azcore.NullValue) removes it.
func TestKeyVault_UpdateKeyAttributes(t *testing.T) {
	nbf := time.Unix(1700000000, 0)
	exp := time.Unix(2200000000, 0)
	later := time.Unix(2300000000, 0)
	tests := []struct {
		name             string
		attrs            azkeys.KeyAttributes
		wantNBF, wantEXP *time.Time
	}{
		{"enabled only", azkeys.KeyAttributes{Enabled: to.Ptr(true)}, &nbf, &exp},
		{"exp null", azkeys.KeyAttributes{Expires: azcore.NullValue[*time.Time]()}, &nbf, nil},
		{"nbf null", azkeys.KeyAttributes{NotBefore: azcore.NullValue[*time.Time]()}, nil, &exp},
		{"new exp", azkeys.KeyAttributes{Expires: &later}, &nbf, &later},
	}
	e := start(t)
	v := e.AddVault("update")
	c := keysClient(t, v.URL(), credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := v.CreateKey("k", emulator.KeyOptions{NotBefore: nbf, Expires: exp})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.UpdateKey(ctx, "k", info.Version,
				azkeys.UpdateKeyParameters{KeyAttributes: &tt.attrs}, nil)
			if err != nil {
				t.Fatalf("UpdateKey: %v", err)
			}
			if diff := cmp.Diff(tt.wantNBF, got.Attributes.NotBefore); diff != "" {
				t.Errorf("nbf mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantEXP, got.Attributes.Expires); diff != "" {
				t.Errorf("exp mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
