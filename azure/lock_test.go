package azure_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/internal/azurite"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/rotation"
)

const lockContainer = "cmkrotator-locks"

// leaseWatch is a transport to Azurite that counts the lease answers a
// locker gets and can cut its connection, as if its process had died.
type leaseWatch struct {
	conflicts chan struct{} // one per acquire answered 409 LeaseAlreadyPresent
	renewals  chan struct{} // one per renewal answered 200
	down      atomic.Bool
}

func newLeaseWatch() *leaseWatch {
	return &leaseWatch{conflicts: make(chan struct{}, 1000), renewals: make(chan struct{}, 1000)}
}

func (w *leaseWatch) Do(req *http.Request) (*http.Response, error) {
	if w.down.Load() {
		return nil, errors.New("dial: connection refused")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	switch action := leaseAction(req.Header); {
	case action == "acquire" && resp.StatusCode == http.StatusConflict:
		w.conflicts <- struct{}{}
	case action == "renew" && resp.StatusCode == http.StatusOK:
		w.renewals <- struct{}{}
	}
	return resp, nil
}

// leaseAction returns x-ms-lease-action, which the SDK sets under its
// lower-case name rather than the canonical one.
func leaseAction(h http.Header) string {
	for k, v := range h {
		if strings.EqualFold(k, "x-ms-lease-action") && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// await waits for n signals on c, failing t after a generous bound.
func await(t *testing.T, c <-chan struct{}, n int, what string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for i := range n {
		select {
		case <-c:
		case <-timeout:
			t.Fatalf("got %d %s, want %d", i, what, n)
		}
	}
}

// newLocker returns a locker on az's lock container, watched by w.
func newLocker(t *testing.T, az *azurite.Azurite, w *leaseWatch, opts azure.BlobLockerOptions) *azure.BlobLocker {
	t.Helper()
	opts.ClientOptions.Transport = w
	if opts.Logger == nil {
		opts.Logger = logcheck.Logger(t)
	}
	l, err := azure.NewBlobLockerFromConnectionString(az.ConnectionString(), lockContainer, &opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// leaseState returns the lease state of key's lock blob.
func leaseState(t *testing.T, az *azurite.Azurite, blobName string) lease.StateType {
	t.Helper()
	c, err := container.NewClientFromConnectionString(az.ConnectionString(), lockContainer, nil)
	if err != nil {
		t.Fatal(err)
	}
	props, err := c.NewBlobClient(blobName).GetProperties(t.Context(), nil)
	if err != nil {
		t.Fatalf("get lock blob %s: %v", blobName, err)
	}
	return *props.LeaseState
}

// startFastAzurite starts Azurite with its clock running rate times as
// fast as real time, so that a 15 s lease (the shortest Azure allows)
// runs out in 15/rate s. Date is replaced through NODE_OPTIONS; request
// handling is unchanged.
func startFastAzurite(t *testing.T, rate int) *azurite.Azurite {
	t.Helper()
	script := filepath.Join(t.TempDir(), "fastclock.js")
	js := `const Real = Date, t0 = Real.now(), rate = ` + strconv.Itoa(rate) + `;
const now = () => t0 + (Real.now() - t0) * rate;
globalThis.Date = class extends Real {
  constructor(...a) { if (a.length === 0) { super(now()); } else { super(...a); } }
  static now() { return now(); }
};
`
	if err := os.WriteFile(script, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NODE_OPTIONS", `--require "`+script+`"`)
	return azurite.Start(t)
}

const key1, key2 = "kv1.vault.azure.net/cmk", "kv1.vault.azure.net/cmk-2"

func TestBlobLocker_SecondWaitsForFirst(t *testing.T) {
	az := azurite.Start(t)
	wa, wb := newLeaseWatch(), newLeaseWatch()
	a := newLocker(t, az, wa, azure.BlobLockerOptions{})
	b := newLocker(t, az, wb, azure.BlobLockerOptions{})

	// The first Lock creates the container and the blob.
	unlockA, err := a.Lock(t.Context(), key1)
	if err != nil {
		t.Fatalf("a: lock %s: %v", key1, err)
	}
	if got, want := leaseState(t, az, "kv1.vault.azure.net_2fcmk"), lease.StateTypeLeased; got != want {
		t.Fatalf("got lease state %q, want %q", got, want)
	}

	type result struct {
		unlock func()
		err    error
	}
	got := make(chan result, 1)
	go func() {
		unlock, err := b.Lock(t.Context(), key1)
		got <- result{unlock, err}
	}()

	// b has been refused twice and is waiting.
	await(t, wb.conflicts, 2, "conflicts")
	select {
	case r := <-got:
		t.Fatalf("b: got lock (err %v) while a holds it", r.err)
	default:
	}

	unlockA()
	r := <-got
	if r.err != nil {
		t.Fatalf("b: lock %s after a unlocked: %v", key1, r.err)
	}
	r.unlock()
	r.unlock() // a second unlock does nothing
	if got, want := leaseState(t, az, "kv1.vault.azure.net_2fcmk"), lease.StateTypeAvailable; got != want {
		t.Errorf("after unlock: got lease state %q, want %q", got, want)
	}
}

func TestBlobLocker_KeysAreIndependent(t *testing.T) {
	az := azurite.Start(t)
	a := newLocker(t, az, newLeaseWatch(), azure.BlobLockerOptions{})
	wb := newLeaseWatch()
	b := newLocker(t, az, wb, azure.BlobLockerOptions{})

	unlock1, err := a.Lock(t.Context(), key1)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock1()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	unlock2, err := b.Lock(ctx, key2)
	if err != nil {
		t.Fatalf("lock %s while %s is held: %v", key2, key1, err)
	}
	unlock2()
	if n := len(wb.conflicts); n != 0 {
		t.Errorf("got %d conflicts locking %s, want 0", n, key2)
	}
}

func TestBlobLocker_ContextEndsWhileWaiting(t *testing.T) {
	az := azurite.Start(t)
	a := newLocker(t, az, newLeaseWatch(), azure.BlobLockerOptions{})
	wb := newLeaseWatch()
	b := newLocker(t, az, wb, azure.BlobLockerOptions{})

	unlockA, err := a.Lock(t.Context(), key1)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		unlock, err := b.Lock(ctx, key1)
		if unlock != nil {
			unlock()
		}
		done <- err
	}()
	await(t, wb.conflicts, 1, "conflicts")
	cancel()
	err = <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("b: got error %v, want one wrapping context.Canceled", err)
	}

	// b holds nothing: once a lets go, the key is free at the first try.
	unlockA()
	wc := newLeaseWatch()
	c := newLocker(t, az, wc, azure.BlobLockerOptions{})
	unlock, err := c.Lock(t.Context(), key1)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if n := len(wc.conflicts); n != 0 {
		t.Errorf("got %d conflicts after a unlocked, want 0", n)
	}
}

func TestBlobLocker_LockAgain(t *testing.T) {
	az := azurite.Start(t)
	w := newLeaseWatch()
	l := newLocker(t, az, w, azure.BlobLockerOptions{})
	for i := range 3 {
		unlock, err := l.Lock(t.Context(), key1)
		if err != nil {
			t.Fatalf("lock %d: %v", i+1, err)
		}
		unlock()
	}
	if n := len(w.conflicts); n != 0 {
		t.Errorf("got %d conflicts, want 0", n)
	}
}

// Azurite's clock runs 5× fast here: the 15 s lease ends in 3 s.
const clockRate = 5

var fastLease = azure.BlobLockerOptions{
	LeaseDuration: 15 * time.Second,
	RenewEvery:    250 * time.Millisecond, // 1.25 s on Azurite's clock
}

func TestBlobLocker_RenewalKeepsTheLease(t *testing.T) {
	az := startFastAzurite(t, clockRate)
	wa := newLeaseWatch()
	a := newLocker(t, az, wa, fastLease)
	unlock, err := a.Lock(t.Context(), key1)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	// 16 renewals span 20 s on Azurite's clock, past the 15 s lease.
	await(t, wa.renewals, 16, "renewals")

	c, err := container.NewClientFromConnectionString(az.ConnectionString(), lockContainer, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := lease.NewBlobClient(c.NewBlobClient("kv1.vault.azure.net_2fcmk"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.AcquireLease(t.Context(), 15, nil)
	if !bloberror.HasCode(err, bloberror.LeaseAlreadyPresent) {
		t.Errorf("acquire by another holder: got %v, want LeaseAlreadyPresent", err)
	}
}

func TestBlobLocker_DeadHolderExpires(t *testing.T) {
	az := startFastAzurite(t, clockRate)
	wa, wb := newLeaseWatch(), newLeaseWatch()
	a := newLocker(t, az, wa, fastLease)
	b := newLocker(t, az, wb, fastLease)
	unlockA, err := a.Lock(t.Context(), key1)
	if err != nil {
		t.Fatal(err)
	}
	wa.down.Store(true) // a neither renews nor releases
	defer func() {
		wa.down.Store(false) // let a's renewal stop without waiting
		unlockA()
	}()

	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	unlock, err := b.Lock(ctx, key1)
	if err != nil {
		t.Fatalf("b: lock %s after a died: %v", key1, err)
	}
	unlock()
	if len(wb.conflicts) == 0 {
		t.Errorf("b got the lock at once, want it refused until a's lease ran out")
	}
}

func TestBlobLocker_Options(t *testing.T) {
	tests := []struct {
		name string
		url  string
		opts azure.BlobLockerOptions
	}{
		{"not a URL", "cmkrotator-locks", azure.BlobLockerOptions{}},
		{"no container", "https://acct.blob.core.windows.net/", azure.BlobLockerOptions{}},
		{"a blob path", "https://acct.blob.core.windows.net/locks/x", azure.BlobLockerOptions{}},
		{"lease too short", "https://acct.blob.core.windows.net/locks", azure.BlobLockerOptions{LeaseDuration: time.Second}},
		{"lease too long", "https://acct.blob.core.windows.net/locks", azure.BlobLockerOptions{LeaseDuration: 2 * time.Minute}},
		{"renewal too late", "https://acct.blob.core.windows.net/locks", azure.BlobLockerOptions{RenewEvery: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := azure.NewBlobLocker(tt.url, noCredential{}, &tt.opts); err == nil {
				t.Errorf("NewBlobLocker(%q, %+v): got no error, want one", tt.url, tt.opts)
			}
		})
	}

	l, err := azure.NewBlobLocker("https://acct.blob.core.windows.net/locks", noCredential{}, nil)
	if err != nil {
		t.Fatalf("NewBlobLocker with a container URL: %v", err)
	}
	if got, want := l.String(), "https://acct.blob.core.windows.net/locks"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// noCredential is never asked for a token: these lockers send nothing.
type noCredential struct{}

func (noCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("no token")
}

// Two instances of the app, each with its own Rotator and BlobLocker on
// one container, get the same new version at the same time: one rotates,
// the other waits, then finds every server current.
func TestRotate_LockerSerialisesInstances(t *testing.T) {
	f := setup(t, 2)
	az := azurite.Start(t)
	v2 := f.newVersion(t)

	// Hold the key so that both instances are surely waiting together.
	holder := newLocker(t, az, newLeaseWatch(), azure.BlobLockerOptions{})
	release, err := holder.Lock(t.Context(), f.key.ID())
	if err != nil {
		t.Fatal(err)
	}

	ev := f.event(t, v2)
	watches := []*leaseWatch{newLeaseWatch(), newLeaseWatch()}
	results := make([][]rotation.EventResult, 2)
	var wg sync.WaitGroup
	for i, w := range watches {
		r := f.rotator(t, func(c *rotation.Config) { c.Locker = newLocker(t, az, w, azure.BlobLockerOptions{}) })
		wg.Go(func() { results[i] = r.HandleEvents(t.Context(), []rotation.Event{ev}) })
	}
	for _, w := range watches {
		await(t, w.conflicts, 1, "conflicts")
	}
	if n := len(f.patches()); n != 0 {
		t.Fatalf("got %d PATCHes while the key was locked, want 0", n)
	}
	release()
	wg.Wait()

	outcomesSeen := map[rotation.Outcome]int{}
	for i, res := range results {
		if len(res) != 1 || res[0].Report == nil || !res[0].Report.OK() {
			t.Fatalf("instance %d: got %+v, want one OK report", i+1, res)
		}
		for _, s := range res[0].Report.Servers {
			outcomesSeen[s.Outcome]++
		}
	}
	if outcomesSeen[rotation.Rotated] != 2 || outcomesSeen[rotation.Current] != 2 {
		t.Errorf("got outcomes %v, want 2 rotated (one instance) and 2 current (the other)", outcomesSeen)
	}
	for _, id := range f.ids {
		if n := f.patchesPerServer()[strings.ToLower(id)]; n != 1 {
			t.Errorf("%s: got %d PATCHes, want 1", id, n)
		}
	}
}
