package azure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/cmkrotator/cmkrotator/rotation"
)

var _ rotation.Locker = (*BlobLocker)(nil)

// Lease timing. A lease is either infinite or 15–60 s long. An infinite
// lease outlives a holder that dies without releasing it, and then the
// key could never be rotated again without an operator breaking it, so
// the lock takes the longest finite lease and renews it while held: a
// dead holder's lock frees itself within a minute, and a renewal that
// fails once or twice (a storage blip) still leaves time for the next.
const (
	lockLease = 60 * time.Second
	lockRenew = 20 * time.Second

	// Waiting for another holder: the first retry comes soon, as most
	// rotations take a few seconds; later ones at most every 2 s, which
	// costs little and frees a caller well within its deadline.
	lockWaitFirst = 200 * time.Millisecond
	lockWaitMax   = 2 * time.Second

	// lockRelease bounds the release on unlock, which runs on a context
	// of its own so that a caller past its deadline still frees the key
	// at once instead of in a minute.
	lockRelease = 5 * time.Second
)

// BlobLockerOptions configures a BlobLocker. The zero value is ready.
type BlobLockerOptions struct {
	// ClientOptions apply to the blob client: Transport, Retry, Logging.
	ClientOptions azcore.ClientOptions

	// Logger receives renewal and release failures; nil: discard.
	Logger *slog.Logger

	// LeaseDuration is the lease taken on a lock blob, 15 to 60 s; zero:
	// 60 s. RenewEvery is how often a held lease is renewed, shorter than
	// LeaseDuration; zero: a third of it. Both are for tests, which
	// cannot wait a minute for a lease to run out.
	LeaseDuration time.Duration
	RenewEvery    time.Duration
}

// BlobLocker is a rotation.Locker on blob leases: one empty blob per lock
// key in one container, locked by leasing it. It serialises a key's
// rotations across every process that uses the same container. It is
// safe for concurrent use.
//
// The container and the blobs are created when first missing; with a
// deployment that creates the container, the identity needs Storage Blob
// Data Contributor on that container only.
type BlobLocker struct {
	client *container.Client
	where  string // container URL, for messages
	lease  time.Duration
	renew  time.Duration
	log    *slog.Logger
}

// NewBlobLocker returns a BlobLocker on the container at containerURL
// ("https://{account}.blob.core.windows.net/cmkrotator-locks"),
// authenticating with cred.
func NewBlobLocker(containerURL string, cred azcore.TokenCredential, opts *BlobLockerOptions) (*BlobLocker, error) {
	u, err := url.Parse(containerURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("open lock container %q: want a container URL such as "+
			"https://{account}.blob.core.windows.net/{container}", containerURL)
	}
	parts, err := azblob.ParseURL(containerURL)
	if err != nil {
		return nil, fmt.Errorf("open lock container %q: %w", containerURL, err)
	}
	if parts.ContainerName == "" || parts.BlobName != "" {
		return nil, fmt.Errorf("open lock container %q: want a container URL with no blob path", containerURL)
	}
	l, err := newBlobLocker(containerURL, opts)
	if err != nil {
		return nil, err
	}
	if l.client, err = container.NewClient(parts.String(), cred, l.clientOptions(opts)); err != nil {
		return nil, fmt.Errorf("open lock container %s: %w", containerURL, err)
	}
	return l, nil
}

// NewBlobLockerFromConnectionString returns a BlobLocker on the container
// named name in the account of a storage connection string (Azurite's,
// for one).
func NewBlobLockerFromConnectionString(conn, name string, opts *BlobLockerOptions) (*BlobLocker, error) {
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("open lock container %q: want a container name", name)
	}
	l, err := newBlobLocker(name, opts)
	if err != nil {
		return nil, err
	}
	if l.client, err = container.NewClientFromConnectionString(conn, name, l.clientOptions(opts)); err != nil {
		// The SDK's message may quote the connection string; never
		// repeat it.
		return nil, fmt.Errorf("open lock container %s: malformed storage connection string", name)
	}
	l.where = l.client.URL()
	return l, nil
}

func newBlobLocker(where string, opts *BlobLockerOptions) (*BlobLocker, error) {
	l := &BlobLocker{where: where, lease: lockLease, log: slog.New(slog.DiscardHandler)}
	if opts != nil {
		if opts.LeaseDuration != 0 {
			l.lease = opts.LeaseDuration
		}
		l.renew = opts.RenewEvery
		if opts.Logger != nil {
			l.log = opts.Logger
		}
	}
	if l.renew == 0 {
		l.renew = l.lease / 3
	}
	if l.lease < 15*time.Second || l.lease > 60*time.Second || l.lease%time.Second != 0 {
		return nil, fmt.Errorf("open lock container %s: lease duration %v: want whole seconds from 15 s to 60 s", where, l.lease)
	}
	if l.renew <= 0 || l.renew >= l.lease {
		return nil, fmt.Errorf("open lock container %s: renewal every %v: want less than the lease, %v", where, l.renew, l.lease)
	}
	return l, nil
}

func (l *BlobLocker) clientOptions(opts *BlobLockerOptions) *container.ClientOptions {
	var co azcore.ClientOptions
	if opts != nil {
		co = opts.ClientOptions
	}
	return &container.ClientOptions{ClientOptions: pipelineOptions(co, transient...)}
}

// String names the container.
func (l *BlobLocker) String() string { return l.where }

// Lock blocks until this process holds the lock named key or ctx ends,
// and returns the function that releases it. While held, the lease is
// renewed in the background; unlock stops the renewal and releases the
// lease, and is safe to call more than once. A holder that dies leaves a
// lease that runs out within the lease duration (60 s).
//
// Another holder makes Lock wait, retrying with jittered backoff; when
// ctx ends first, the error wraps ctx's and nothing is held. Other
// failures return at once, marked rotation.ErrRetryable when a later try
// could succeed (authorization, throttling, storage errors).
func (l *BlobLocker) Lock(ctx context.Context, key string) (unlock func(), err error) {
	if key == "" {
		return nil, errors.New("lock: empty key")
	}
	name := blobName(key)
	b := l.client.NewBlobClient(name)
	lc, err := lease.NewBlobClient(b, nil) // a random lease ID of our own
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}

	if err := l.acquire(ctx, key, name, lc); err != nil {
		return nil, err
	}

	held, stop := context.WithCancel(context.WithoutCancel(ctx))
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		l.keep(held, key, lc)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			stop()
			<-renewed
			l.release(ctx, key, lc)
		})
	}, nil
}

// acquire takes the lease on the blob name, creating the blob (and the
// container) when missing, and waits while another holder has it.
func (l *BlobLocker) acquire(ctx context.Context, key, name string, lc *lease.BlobClient) error {
	created := false
	wait := lockWaitFirst
	for attempt := 1; ; attempt++ {
		ctx, tries := withLastTry(ctx)
		_, err := lc.AcquireLease(ctx, int32(l.lease/time.Second), nil)
		switch {
		case err == nil:
			return nil
		case bloberror.HasCode(err, bloberror.LeaseAlreadyPresent):
			// Held by another process: wait below.
		case !created && bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound):
			if err := l.create(ctx, name); err != nil {
				return err
			}
			created = true
			continue
		default:
			if _, ok := errors.AsType[*azcore.ResponseError](err); !ok && tries.Reached() {
				// A request that failed in flight may have taken the
				// lease all the same; give it back rather than hold the
				// key for a minute. One that never connected did not.
				l.release(ctx, key, lc)
			}
			return classify("lock "+key, tries.explain(err))
		}

		t := time.NewTimer(rand.N(wait) + wait/2) // 0.5–1.5 × wait
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("lock %s: held elsewhere after %d attempts: %w", key, attempt, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, lockWaitMax)
	}
}

// create makes the empty lock blob name, and the container if that is
// missing too. Either may have been created meanwhile by another process.
func (l *BlobLocker) create(ctx context.Context, name string) error {
	err := l.upload(ctx, name)
	if bloberror.HasCode(err, bloberror.ContainerNotFound) {
		_, err = l.client.Create(ctx, nil)
		if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return classify("create lock container "+l.where, err)
		}
		err = l.upload(ctx, name)
	}
	// The blob exists already: as created, or leased, by someone else.
	if err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists,
		bloberror.LeaseIDMissing, bloberror.ConditionNotMet) {
		return classify("create lock blob "+name, err)
	}
	return nil
}

func (l *BlobLocker) upload(ctx context.Context, name string) error {
	_, err := l.client.NewBlockBlobClient(name).Upload(ctx,
		streaming.NopCloser(bytes.NewReader(nil)),
		&blockblob.UploadOptions{
			AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{
				IfNoneMatch: to.Ptr(azcore.ETagAny),
			}},
		})
	return err
}

// keep renews the lease every l.renew until ctx ends. A failed renewal
// is tried again at the next tick, while the lease still runs; a lease
// taken over by another holder is reported once and given up.
func (l *BlobLocker) keep(ctx context.Context, key string, lc *lease.BlobClient) {
	t := time.NewTicker(l.renew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, l.renew)
		_, err := lc.RenewLease(rctx, nil)
		cancel()
		switch {
		case err == nil, ctx.Err() != nil:
		case bloberror.HasCode(err, bloberror.LeaseIDMismatchWithLeaseOperation,
			bloberror.LeaseLost, bloberror.BlobNotFound, bloberror.ContainerNotFound):
			l.log.ErrorContext(ctx, "lock lost: another holder may rotate the key meanwhile",
				"lock_key", key, "err", classify("renew lock "+key, err))
			return
		default:
			l.log.WarnContext(ctx, "lock renewal failed; retrying", "lock_key", key,
				"retry_in", l.renew, "err", classify("renew lock "+key, err))
		}
	}
}

// release gives the lease back, in one try on a context of its own that
// outlives ctx's cancellation by at most lockRelease. A failure is logged:
// the lease runs out by itself, so retrying would only hold the caller.
func (l *BlobLocker) release(ctx context.Context, key string, lc *lease.BlobClient) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockRelease)
	defer cancel()
	rctx = policy.WithRetryOptions(rctx, policy.RetryOptions{MaxRetries: -1})
	_, err := lc.ReleaseLease(rctx, nil)
	if err == nil || bloberror.HasCode(err, bloberror.LeaseIDMismatchWithLeaseOperation,
		bloberror.LeaseNotPresentWithLeaseOperation, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return // released, or never ours
	}
	l.log.WarnContext(ctx, "lock release failed; the lease runs out by itself",
		"lock_key", key, "err", classify("release lock "+key, err))
}

// blobName turns a lock key into a blob name that needs no escaping and
// maps distinct keys to distinct names: lower-case letters, digits, '.'
// and '-' stay, every other byte becomes '_' and two hex digits
// ("kv1.vault.azure.net/cmk" is "kv1.vault.azure.net_2fcmk").
func blobName(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return b.String()
}
