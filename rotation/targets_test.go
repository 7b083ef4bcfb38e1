package rotation_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/rotation"
)

const (
	relayEU = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.FluidRelay/fluidRelayServers/relay-eu"
	relayUS = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.FluidRelay/fluidRelayServers/relay-us"
)

func TestParseTargets(t *testing.T) {
	data := `{"targets": [
		{"key": "https://contoso-kv.vault.azure.net/keys/fluid-cmk", "servers": ["` + relayEU + `"]},
		{"key": "https://Other.vault.azure.net/keys/cmk/", "servers": ["` + strings.ToLower(relayUS) + `/"]}
	]}`
	got, err := rotation.ParseTargets([]byte(data))
	if err != nil {
		t.Fatalf("ParseTargets: %v", err)
	}
	want := []rotation.Target{
		{Key: rotation.KeyRef{Vault: "contoso-kv.vault.azure.net", Name: "fluid-cmk"}, Servers: []string{relayEU}},
		{Key: rotation.KeyRef{Vault: "other.vault.azure.net", Name: "cmk"}, Servers: []string{strings.ToLower(relayUS)}},
	}
	if diff := cmp.Diff(want, got.All()); diff != "" {
		t.Errorf("All() mismatch (-want +got):\n%s", diff)
	}

	lookups := []struct {
		url  string
		want bool
	}{
		{"https://contoso-kv.vault.azure.net/keys/fluid-cmk/0123abcd", true},
		{"https://CONTOSO-KV.vault.azure.net/keys/FLUID-CMK", true},
		{"https://contoso-kv.vault.azure.net/keys/fluid-cmk-old/0123abcd", false},
		{"https://contoso-kv.vault.azure.net/keys/fluid/0123abcd", false},
		{"https://contoso-kv2.vault.azure.net/keys/fluid-cmk/0123abcd", false},
		{"https://contoso-kv.vault.azure.cn/keys/fluid-cmk/0123abcd", false},
		{"https://other.vault.azure.net/keys/cmk-old", false},
		{"https://other.vault.azure.net/keys/cmk", true},
	}
	for _, l := range lookups {
		ref, err := rotation.ParseKeyURL(l.url)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got.Lookup(ref); ok != l.want {
			t.Errorf("Lookup(%s) = %v, want %v", l.url, ok, l.want)
		}
	}
}

func TestParseTargets_Errors(t *testing.T) {
	entry := func(key string, servers ...string) string {
		return `{"key":"` + key + `","servers":["` + strings.Join(servers, `","`) + `"]}`
	}
	const key = "https://kv.vault.azure.net/keys/k"
	tests := []struct {
		name, data, mention string
	}{
		{"not JSON", `{"targets":`, "parse rotation targets"},
		{"unknown field", `{"targets":[{"key":"` + key + `","server":["` + relayEU + `"]}]}`, "server"},
		{"versioned key", `{"targets":[` + entry(key+"/v1", relayEU) + `]}`, "targets[0]"},
		{"bad key URL", `{"targets":[` + entry(key, relayEU) + `,` + entry("https://kv.vault.azure.net/secrets/s", relayUS) + `]}`, "targets[1]"},
		{"duplicate key", `{"targets":[` + entry(key, relayEU) + `,` + entry("https://KV.vault.azure.net/keys/K", relayUS) + `]}`, "targets[1]"},
		{"duplicate key with the root's trailing dot", `{"targets":[` + entry(key, relayEU) + `,` + entry("https://kv.vault.azure.net./keys/k", relayUS) + `]}`,
			`targets[1]: key "https://kv.vault.azure.net./keys/k" already listed`},
		{"key on a host that is no vault's", `{"targets":[` + entry(key, relayEU) + `,` + entry("https://kv.example.com/keys/k", relayUS) + `]}`,
			`targets[1]: parse key URL "https://kv.example.com/keys/k": vault host "kv.example.com": want a name under vault.azure.net`},
		{"key on a single-label host", `{"targets":[` + entry("https://kv1/keys/k", relayEU) + `]}`, `targets[0]: parse key URL "https://kv1/keys/k": vault host "kv1"`},
		{"no servers", `{"targets":[{"key":"` + key + `","servers":[]}]}`, "no servers"},
		{"server not a Fluid Relay ID", `{"targets":[` + entry(key, relayEU, "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a") + `]}`, "targets[0].servers[1]"},
		{"server ID too short", `{"targets":[` + entry(key, "relay-eu") + `]}`, "targets[0].servers[0]"},
		{"server under two keys", `{"targets":[` + entry(key, relayEU) + `,` + entry(key+"2", strings.ToUpper(relayEU)) + `]}`, "already listed"},
		{"trailing data", `{"targets":[]} {}`, "trailing"},
		{"an array, not the map", `[]`, `want a JSON object, {"targets": [{"key": …, "servers": […]}]}, got an array`},
		{"targets not an array", `{"targets":{}}`, "targets: want an array of objects"},
		{"entry not an object", `{"targets":[` + entry(key, relayEU) + `,"` + key + `"]}`, "targets[1]: want an object"},
		{"key not a string", `{"targets":[{"key":5,"servers":["` + relayEU + `"]}]}`, "targets[0]: key: want a key URL string, got a number"},
		{"servers not an array", `{"targets":[{"key":"` + key + `","servers":"` + relayEU + `"}]}`, "targets[0]: servers: want server resource IDs"},
		{"unknown field in an entry", `{"targets":[` + entry(key, relayEU) + `,{"key":"` + key + `2","servers":["` + relayUS + `"],"extra":1}]}`,
			`targets[1]: unknown field "extra"; want only "key" and "servers"`},
		{"unknown top-level field", `{"target":[]}`, `unknown field "target"; want only "targets"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rotation.ParseTargets([]byte(tt.data))
			if err == nil {
				t.Fatalf("ParseTargets: got no error, want one mentioning %q", tt.mention)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("got error %q, want one mentioning %q", err, tt.mention)
			}
			if strings.Contains(err.Error(), "Go ") || strings.Contains(err.Error(), "json: ") {
				t.Errorf("got error %q, want the shape in words, not the decoder's", err)
			}
		})
	}
}

func TestTargets_Zero(t *testing.T) {
	var zero rotation.Targets
	if _, ok := zero.Lookup(rotation.KeyRef{Vault: "kv", Name: "k"}); ok {
		t.Error("zero Targets: Lookup found a key, want none")
	}
	if got := zero.All(); len(got) != 0 {
		t.Errorf("zero Targets: All() = %v, want empty", got)
	}
}

func FuzzParseTargets(f *testing.F) {
	f.Add([]byte(`{"targets":[{"key":"https://contoso-kv.vault.azure.net/keys/fluid-cmk","servers":["` + relayEU + `"]}]}`))
	f.Add([]byte(`{"targets":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		targets, err := rotation.ParseTargets(data)
		if err != nil {
			return
		}
		for _, target := range targets.All() {
			if target.Key.Version != "" || len(target.Servers) == 0 {
				t.Errorf("accepted target %+v", target)
			}
			if _, ok := targets.Lookup(target.Key); !ok {
				t.Errorf("Lookup(%v) failed for a listed key", target.Key)
			}
		}
	})
}

func FuzzParseKeyURL(f *testing.F) {
	for _, s := range []string{
		"https://sample-kv.vault.azure.net/keys/newkey/ee059b2bb5bc48398a53b168c6cdcb10",
		"https://kv1.vault.azure.net/keys/k1/",
		"https://hsm1.managedhsm.azure.net/keys/k1/v1",
		"https://127.0.0.1:8443/keys/k/v",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := rotation.ParseKeyURL(s)
		if err != nil {
			return
		}
		again, err := rotation.ParseKeyURL(ref.String())
		if err != nil {
			t.Fatalf("ParseKeyURL(%q) = %+v, whose String %q does not parse: %v", s, ref, ref.String(), err)
		}
		if again != ref {
			t.Errorf("round trip of %q: got %+v, want %+v", s, again, ref)
		}
	})
}
