package rotation

import (
	"context"
	"errors"
	"time"
)

// Errors the adapters wrap so that the domain can classify a failure without
// knowing the SDK. Test with errors.Is.
var (
	// ErrNotFound: the key, version or server does not exist. Final.
	ErrNotFound = errors.New("not found")

	// ErrRetryable: throttling, a 5xx, a timeout, or an authentication or
	// permission failure that may be propagation delay. A redelivery of the
	// same event could succeed without a person.
	ErrRetryable = errors.New("retryable")

	// ErrDisabled: the key version exists but is disabled, so Key Vault
	// refuses to describe it. Final.
	ErrDisabled = errors.New("disabled")

	// ErrThrottled: Azure answered 429. Always comes with ErrRetryable.
	ErrThrottled = errors.New("throttled")
)

// KeyVersion is one version of a Key Vault key as the vault describes it.
type KeyVersion struct {
	Ref       KeyRef    // always versioned
	Type      string    // "RSA", "RSA-HSM", "EC", "EC-HSM", "oct", "oct-HSM"
	Ops       []string  // permitted operations, e.g. "wrapKey", "unwrapKey"
	Enabled   bool      //
	NotBefore time.Time // zero: no lower bound
	Expires   time.Time // zero: never expires
	Created   time.Time // when Key Vault created the version
}

// Server is a Fluid Relay server as Resource Manager reports it.
type Server struct {
	ID                string // full ARM resource ID
	ProvisioningState string // "Succeeded", "Failed", "Canceled", …
	// KeyURL is properties.encryption.customerManagedKeyEncryption.
	// keyEncryptionKeyUrl; empty when the server has no customer-managed
	// key.
	KeyURL string
}

// Keys reads Key Vault key metadata. Implementations are safe for
// concurrent use. Errors wrap ErrNotFound or ErrRetryable where they apply.
type Keys interface {
	// Key returns the version ref names, or the key's current version when
	// ref.Version is empty.
	Key(ctx context.Context, ref KeyRef) (KeyVersion, error)

	// Versions lists every version of ref's key, in no particular order.
	Versions(ctx context.Context, ref KeyRef) ([]KeyVersion, error)
}

// Servers reads and updates Fluid Relay servers through Resource Manager.
// Implementations are safe for concurrent use. Errors wrap ErrNotFound or
// ErrRetryable where they apply; a *RetryAfterError says when to come back.
type Servers interface {
	// Get reads one server by its ARM resource ID.
	Get(ctx context.Context, id string) (Server, error)

	// SetKeyURL PATCHes the server's key URL with the minimal body and
	// returns the server as the PATCH response describes it.
	SetKeyURL(ctx context.Context, id, keyURL string) (Server, error)

	// List returns every Fluid Relay server in a subscription
	// ("/subscriptions/{id}") or resource group
	// ("/subscriptions/{id}/resourceGroups/{rg}").
	List(ctx context.Context, scope string) ([]Server, error)
}

// RetryAfterError is returned when Azure asked the caller to wait longer
// than the time left. It wraps ErrRetryable.
type RetryAfterError struct {
	After time.Duration // what Azure asked for
	Err   error         // the response error
}

func (e *RetryAfterError) Error() string {
	return "throttled, retry after " + e.After.String() + ": " + e.Err.Error()
}

func (e *RetryAfterError) Unwrap() []error { return []error{ErrRetryable, ErrThrottled, e.Err} }

type noWaitKey struct{}

// NoWait marks ctx for a call whose result is welcome but not needed:
// adapters make one attempt and return a throttled or failed answer at
// once instead of waiting to retry it.
func NoWait(ctx context.Context) context.Context {
	return context.WithValue(ctx, noWaitKey{}, true)
}

// IsNoWait reports whether ctx was marked by NoWait.
func IsNoWait(ctx context.Context) bool {
	v, _ := ctx.Value(noWaitKey{}).(bool)
	return v
}

// Locker serialises the rotations of one key across processes.
// Implementations are safe for concurrent use.
type Locker interface {
	// Lock blocks until this process holds the lock named key or ctx
	// ends, and returns the function that releases it. A lock whose
	// holder dies expires by itself within a minute or so.
	Lock(ctx context.Context, key string) (unlock func(), err error)
}
