package rotation

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// KeyRef names a Key Vault or Managed HSM key, optionally one version of it.
// The zero value names nothing. Compare keys with SameKey: vault hosts and
// key names are case-insensitive in Key Vault.
type KeyRef struct {
	Vault   string // host and optional port, lower case: "contoso.vault.azure.net"
	Name    string // key name as written
	Version string // empty for a versionless reference
}

// ParseKeyURL parses "https://{vault}/keys/{name}[/{version}]", accepting a
// trailing slash. The vault host must be a name under a Key Vault or
// Managed HSM domain of one of Azure's clouds (vault.azure.net,
// managedhsm.azure.net, vault.azure.cn, …) or a loopback address; it is
// kept in lower case, without a trailing dot or port 443. Anything else
// (another host, scheme, a secret URL, extra path segments, a query) is
// an error.
func ParseKeyURL(s string) (KeyRef, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		// url.Error repeats the input, which may carry a password.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return KeyRef{}, fmt.Errorf("parse key URL: %w", err)
	}
	if u.User != nil {
		return KeyRef{}, fmt.Errorf("parse key URL %q: unexpected user info", u.Redacted())
	}
	if u.Scheme != "https" || u.Host == "" {
		return KeyRef{}, fmt.Errorf("parse key URL %q: want https://{vault}/keys/{name}[/{version}]", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return KeyRef{}, fmt.Errorf("parse key URL %q: unexpected query or fragment", s)
	}

	parts := strings.Split(strings.TrimSuffix(u.EscapedPath(), "/"), "/")
	if len(parts) < 3 || len(parts) > 4 || parts[0] != "" || !strings.EqualFold(parts[1], "keys") {
		return KeyRef{}, fmt.Errorf("parse key URL %q: want https://{vault}/keys/{name}[/{version}]", s)
	}
	host, err := vaultHost(u.Hostname(), u.Port())
	if err != nil {
		return KeyRef{}, fmt.Errorf("parse key URL %q: %w", s, err)
	}
	ref := KeyRef{Vault: host, Name: parts[2]}
	if len(parts) == 4 {
		ref.Version = parts[3]
	}
	if err := ref.validate(); err != nil {
		return KeyRef{}, fmt.Errorf("parse key URL %q: %w", s, err)
	}
	return ref, nil
}

// vaultSuffixes are the DNS domains of Key Vault and Managed HSM in
// Azure's public, China, US Government and Germany clouds, and of Key Vault
// in the air-gapped US clouds. A key URL's host must be a name under one
// of them, or a loopback address.
var vaultSuffixes = []string{
	"vault.azure.net", "managedhsm.azure.net",
	"vault.azure.cn", "managedhsm.azure.cn",
	"vault.usgovcloudapi.net", "managedhsm.usgovcloudapi.net",
	"vault.microsoftazure.de", "managedhsm.microsoftazure.de",
	"vault.cloudapi.eaglex.ic.gov", "vault.cloudapi.microsoft.scloud",
}

// vaultHost returns the canonical form of a key URL's host name and port:
// lower case, without a trailing dot or https's default port, so that
// every spelling of one vault compares equal. Hosts that are neither
// under vaultSuffixes nor loopback are refused.
func vaultHost(name, port string) (string, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("vault port %q: want 1-65535", port)
		}
	}
	if !isLoopbackName(name) && !underVaultSuffix(name) {
		return "", fmt.Errorf("vault host %q: want a name under %s, or a loopback address (127.0.0.1, ::1, localhost)",
			name, strings.Join(vaultSuffixes, ", "))
	}

	if strings.Contains(name, ":") {
		name = "[" + name + "]" // an IPv6 address
	}
	if port == "" || port == "443" {
		return name, nil
	}
	return name + ":" + port, nil
}

// underVaultSuffix reports whether name is a DNS name of one or more
// labels under one of vaultSuffixes.
func underVaultSuffix(name string) bool {
	for _, suffix := range vaultSuffixes {
		sub, ok := strings.CutSuffix(name, "."+suffix)
		if !ok || sub == "" || len(name) > 253 {
			continue
		}
		for label := range strings.SplitSeq(sub, ".") {
			if !dnsLabel(label) {
				return false
			}
		}
		return true
	}
	return false
}

// dnsLabel reports whether s is a DNS label of letters, digits and inner
// dashes.
func dnsLabel(s string) bool {
	if len(s) > 63 || strings.HasPrefix(s, "-") || strings.HasSuffix(s, "-") {
		return false
	}
	return validName(s, 63)
}

// validate checks names against Key Vault's rules: 1–127 characters of
// letters, digits and dashes; versions are 32 hex digits in Key Vault, but
// only the character set is checked so that emulators and HSMs may differ.
func (k KeyRef) validate() error {
	if !validName(k.Name, 127) {
		return fmt.Errorf("key name %q: want 1-127 letters, digits or dashes", k.Name)
	}
	if k.Version != "" && !validName(k.Version, 64) {
		return fmt.Errorf("key version %q: want letters and digits", k.Version)
	}
	return nil
}

func validName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}

// String returns the canonical URL, versioned when the reference is.
func (k KeyRef) String() string {
	s := k.VaultURL() + "/keys/" + k.Name
	if k.Version != "" {
		s += "/" + k.Version
	}
	return s
}

// VaultURL returns "https://{vault}".
func (k KeyRef) VaultURL() string { return "https://" + k.Vault }

// Versionless returns the reference without its version.
func (k KeyRef) Versionless() KeyRef { k.Version = ""; return k }

// WithVersion returns the reference to version v of the same key.
func (k KeyRef) WithVersion(v string) KeyRef { k.Version = v; return k }

// SameKey reports whether k and o name the same key of the same vault,
// ignoring versions and case.
func (k KeyRef) SameKey(o KeyRef) bool {
	return strings.EqualFold(k.Vault, o.Vault) && strings.EqualFold(k.Name, o.Name)
}

// ID is a canonical, case-folded, versionless identity for maps.
func (k KeyRef) ID() string {
	return strings.ToLower(k.Vault) + "/" + strings.ToLower(k.Name)
}

// IsLoopback reports whether the vault host is a loopback address: an
// emulator or test harness, never Azure.
func (k KeyRef) IsLoopback() bool { return IsLoopbackHost(k.Vault) }

// IsLoopbackHost reports whether host (with optional port) is a loopback
// address: an IP address in 127.0.0.0/8 or ::1, or the name "localhost".
// Names under ".localhost" are not: whether they reach this machine is up
// to the resolver.
func IsLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return isLoopbackName(strings.ToLower(strings.Trim(host, "[]")))
}

// isLoopbackName reports whether a lower-case host name without port or
// brackets is a loopback IP address or "localhost".
func isLoopbackName(name string) bool {
	if name == "localhost" {
		return true
	}
	ip := net.ParseIP(name)
	return ip != nil && ip.IsLoopback()
}
