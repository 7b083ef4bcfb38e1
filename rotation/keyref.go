package rotation

import (
	"errors"
	"fmt"
	"net"
	"net/url"
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
// trailing slash. Anything else (another scheme, a secret URL, extra path
// segments, a query) is an error.
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
	// https's default port names the same vault as no port.
	host := strings.TrimSuffix(strings.ToLower(u.Host), ":443")
	ref := KeyRef{Vault: host, Name: parts[2]}
	if len(parts) == 4 {
		ref.Version = parts[3]
	}
	if err := ref.validate(); err != nil {
		return KeyRef{}, fmt.Errorf("parse key URL %q: %w", s, err)
	}
	return ref, nil
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

// IsLoopback reports whether the vault host is a loopback address or a
// localhost name: an emulator or test harness, never Azure.
func (k KeyRef) IsLoopback() bool { return IsLoopbackHost(k.Vault) }

// IsLoopbackHost reports whether host (with optional port) is a loopback IP
// address, "localhost" or a name under ".localhost".
func IsLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
