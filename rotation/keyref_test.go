package rotation_test

import (
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/rotation"
)

func TestParseKeyURL(t *testing.T) {
	tests := []struct {
		in   string
		want rotation.KeyRef
	}{
		{"https://kv1.vault.azure.net/keys/k1", rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1"}},
		{"https://kv1.vault.azure.net/keys/k1/", rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1"}},
		{"https://KV1.Vault.Azure.NET/keys/K1/abc123", rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "K1", Version: "abc123"}},
		{"https://hsm1.managedhsm.azure.net/keys/k1/v1", rotation.KeyRef{Vault: "hsm1.managedhsm.azure.net", Name: "k1", Version: "v1"}},
		{"https://kv.vault.azure.cn/keys/k/v", rotation.KeyRef{Vault: "kv.vault.azure.cn", Name: "k", Version: "v"}},
		{"https://127.0.0.1:8443/keys/k/v", rotation.KeyRef{Vault: "127.0.0.1:8443", Name: "k", Version: "v"}},
		{"https://kv1.vault.azure.net:443/keys/k1", rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1"}},
		{" https://kv1.vault.azure.net/keys/k1/v2 ", rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1", Version: "v2"}},
		{"https://kv1.vault.azure.net./keys/k1/v1", rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1", Version: "v1"}},
		{"https://KV1.vault.azure.net.:443/keys/k1", rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1"}},
		{"https://hsm1.managedhsm.azure.cn/keys/k", rotation.KeyRef{Vault: "hsm1.managedhsm.azure.cn", Name: "k"}},
		{"https://kv.vault.usgovcloudapi.net/keys/k", rotation.KeyRef{Vault: "kv.vault.usgovcloudapi.net", Name: "k"}},
		{"https://hsm.managedhsm.usgovcloudapi.net/keys/k", rotation.KeyRef{Vault: "hsm.managedhsm.usgovcloudapi.net", Name: "k"}},
		{"https://kv.vault.microsoftazure.de/keys/k", rotation.KeyRef{Vault: "kv.vault.microsoftazure.de", Name: "k"}},
		{"https://hsm.managedhsm.microsoftazure.de/keys/k", rotation.KeyRef{Vault: "hsm.managedhsm.microsoftazure.de", Name: "k"}},
		{"https://kv.vault.cloudapi.eaglex.ic.gov/keys/k", rotation.KeyRef{Vault: "kv.vault.cloudapi.eaglex.ic.gov", Name: "k"}},
		{"https://kv.vault.cloudapi.microsoft.scloud/keys/k", rotation.KeyRef{Vault: "kv.vault.cloudapi.microsoft.scloud", Name: "k"}},
		{"https://127.0.0.2/keys/k", rotation.KeyRef{Vault: "127.0.0.2", Name: "k"}},
		{"https://[::1]:443/keys/k", rotation.KeyRef{Vault: "[::1]", Name: "k"}},
		{"https://[::1]:8443/keys/k", rotation.KeyRef{Vault: "[::1]:8443", Name: "k"}},
		{"https://LocalHost:8443/keys/k", rotation.KeyRef{Vault: "localhost:8443", Name: "k"}},
		{"https://localhost./keys/k", rotation.KeyRef{Vault: "localhost", Name: "k"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := rotation.ParseKeyURL(tt.in)
			if err != nil {
				t.Fatalf("ParseKeyURL: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseKeyURL_Errors(t *testing.T) {
	for _, in := range []string{
		"",
		"http://kv1.vault.azure.net/keys/k1",
		"https://kv1.vault.azure.net/secrets/k1/v1",
		"https://kv1.vault.azure.net/keys/",
		"https://kv1.vault.azure.net/keys/k1/v1/extra",
		"https://kv1.vault.azure.net/keys/k_1",
		"https://kv1.vault.azure.net/keys/k1?api-version=7.4",
		"kv1.vault.azure.net/keys/k1",
		"https:///keys/k1",
	} {
		if got, err := rotation.ParseKeyURL(in); err == nil {
			t.Errorf("ParseKeyURL(%q) = %+v, want error", in, got)
		}
	}
}

// Hosts other than Key Vault's, Managed HSM's and loopback are refused,
// with an error naming the host and the domains accepted.
func TestParseKeyURL_Hosts(t *testing.T) {
	for _, host := range []string{
		"example.com",
		"kv.example.com",
		"kv1",
		"kv1.localhost",
		"10.0.0.1",
		"0.0.0.0",
		"vault.azure.net",
		"kv1vault.azure.net",
		"kv1.vault.azure.net.evil.com",
		"kv1.vault.azure.net..",
		"kv_1.vault.azure.net",
		"-kv1.vault.azure.net",
		"a..b.vault.azure.net",
		"kv1.privatelink.vaultcore.azure.net",
	} {
		t.Run(host, func(t *testing.T) {
			ref, err := rotation.ParseKeyURL("https://" + host + "/keys/k/v")
			if err == nil {
				t.Fatalf("got %+v, want an error", ref)
			}
			want := strings.TrimSuffix(host, ".")
			for _, s := range []string{`vault host "` + want + `"`, "vault.azure.net, managedhsm.azure.net", "loopback"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("got error %q, want one containing %q", err, s)
				}
			}
		})
	}
}

// A key URL written with the root's trailing dot names the same key, so a
// server on it reads as on the subscribed key, not on another one.
func TestParseKeyURL_TrailingDotSameVault(t *testing.T) {
	server := on("https://kv1.vault.azure.net./keys/cmk/v1")
	got := rotation.Decide(rotation.Input{Key: cmk, Server: server, Previous: &v1, Target: v2, Current: "v2", Now: now})
	if got.Action != rotation.Patch || got.PreviousVersion != "v1" {
		t.Errorf("got %+v, want a patch from v1", got)
	}
}

func TestKeyRef_SameKey(t *testing.T) {
	a, _ := rotation.ParseKeyURL("https://kv1.vault.azure.net/keys/CMK/v1")
	b, _ := rotation.ParseKeyURL("https://KV1.vault.azure.net/keys/cmk")
	c, _ := rotation.ParseKeyURL("https://kv1.vault.azure.net/keys/cmk-old")
	if !a.SameKey(b) {
		t.Errorf("%v and %v: got different keys, want the same", a, b)
	}
	if a.SameKey(c) {
		t.Errorf("%v and %v: got the same key, want different", a, c)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8443":       true,
		"[::1]:443":            true,
		"localhost":            true,
		"127.1.2.3":            true,
		"LocalHost:8443":       true,
		"[::1]":                true,
		"kv1.localhost:9000":   false,
		"localhost.localhost":  false,
		"kv1.vault.azure.net":  false,
		"localhost.evil.com":   false,
		"10.0.0.1":             false,
		"[::2]:443":            false,
		"127.0.0.1.nip.io:443": false,
	} {
		if got := rotation.IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParseKeyURL_RedactsPassword(t *testing.T) {
	for _, in := range []string{
		"https://user:s3cret@kv1.vault.azure.net/keys/k1",
		"https://user:s3cret@kv1.vault.azure.net/keys/k1/%zz",
	} {
		_, err := rotation.ParseKeyURL(in)
		if err == nil {
			t.Fatalf("ParseKeyURL(%q): got no error, want one", in)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseKeyURL(%q): error %q repeats the password", in, err)
		}
	}
}
