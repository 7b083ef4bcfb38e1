package azure

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// KeyVaultOptions configures a KeyVault. The zero value is ready to use.
type KeyVaultOptions struct {
	// ClientOptions apply to every vault client: Transport, Retry,
	// Logging. Zero retry fields get the adapter's bounded defaults.
	ClientOptions azcore.ClientOptions
}

// KeyVault implements rotation.Keys with one azkeys client per vault host,
// created on first use. It is safe for concurrent use.
type KeyVault struct {
	cred azcore.TokenCredential
	opts azcore.ClientOptions

	mu      sync.Mutex
	clients map[string]*azkeys.Client // by lower-case vault host
}

var _ rotation.Keys = (*KeyVault)(nil)

// NewKeyVault returns a KeyVault that authenticates with cred. The
// challenge's resource check is skipped only for vault hosts that are
// loopback addresses (rotation.IsLoopbackHost: emulators), never for a
// DNS name other than localhost.
func NewKeyVault(cred azcore.TokenCredential, opts *KeyVaultOptions) *KeyVault {
	kv := &KeyVault{cred: cred, clients: make(map[string]*azkeys.Client)}
	if opts != nil {
		kv.opts = opts.ClientOptions
	}
	kv.opts = pipelineOptions(kv.opts, transient...)
	return kv
}

func (kv *KeyVault) client(ref rotation.KeyRef) (*azkeys.Client, error) {
	host := strings.ToLower(ref.Vault)
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if c, ok := kv.clients[host]; ok {
		return c, nil
	}
	c, err := azkeys.NewClient(ref.VaultURL(), kv.cred, &azkeys.ClientOptions{
		ClientOptions:                        kv.opts,
		DisableChallengeResourceVerification: rotation.IsLoopbackHost(host),
	})
	if err != nil {
		return nil, fmt.Errorf("new key vault client for %s: %w", host, err)
	}
	kv.clients[host] = c
	return c, nil
}

// Key returns the version ref names, or the current version when ref is
// versionless. A disabled version wraps rotation.ErrDisabled.
func (kv *KeyVault) Key(ctx context.Context, ref rotation.KeyRef) (rotation.KeyVersion, error) {
	c, err := kv.client(ref)
	if err != nil {
		return rotation.KeyVersion{}, err
	}
	ctx, tries := withLastTry(ctx)
	resp, err := c.GetKey(ctx, ref.Name, ref.Version, nil)
	if err != nil {
		return rotation.KeyVersion{}, classify("get key "+ref.String(), tries.explain(err))
	}
	if resp.Key == nil || resp.Key.KID == nil {
		return rotation.KeyVersion{}, fmt.Errorf("get key %s: response has no kid", ref)
	}
	v, err := version(string(*resp.Key.KID), resp.Attributes)
	if err != nil {
		return rotation.KeyVersion{}, fmt.Errorf("get key %s: %w", ref, err)
	}
	if resp.Key.Kty != nil {
		v.Type = string(*resp.Key.Kty)
	}
	for _, op := range resp.Key.KeyOps {
		if op != nil {
			v.Ops = append(v.Ops, string(*op))
		}
	}
	return v, nil
}

// Versions lists every version of ref's key. Listed versions carry
// attributes only: Type and Ops are empty.
func (kv *KeyVault) Versions(ctx context.Context, ref rotation.KeyRef) ([]rotation.KeyVersion, error) {
	c, err := kv.client(ref)
	if err != nil {
		return nil, err
	}
	var out []rotation.KeyVersion
	ctx, tries := withLastTry(ctx)
	pager := c.NewListKeyPropertiesVersionsPager(ref.Name, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, classify("list versions of "+ref.Versionless().String(), tries.explain(err))
		}
		for _, p := range page.Value {
			if p == nil || p.KID == nil {
				continue
			}
			v, err := version(string(*p.KID), p.Attributes)
			if err != nil {
				return nil, fmt.Errorf("list versions of %s: %w", ref.Versionless(), err)
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// version builds a KeyVersion from a kid and attributes.
func version(kid string, a *azkeys.KeyAttributes) (rotation.KeyVersion, error) {
	ref, err := rotation.ParseKeyURL(kid)
	if err != nil {
		return rotation.KeyVersion{}, err
	}
	if ref.Version == "" {
		return rotation.KeyVersion{}, errors.New("kid " + kid + " has no version")
	}
	v := rotation.KeyVersion{Ref: ref}
	if a != nil {
		v.Enabled = a.Enabled != nil && *a.Enabled
		v.NotBefore = deref(a.NotBefore)
		v.Expires = deref(a.Expires)
		v.Created = deref(a.Created)
	}
	return v, nil
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
