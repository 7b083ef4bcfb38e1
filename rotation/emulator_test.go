package rotation_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// world is an emulator with vault kv1 holding key cmk (version v1) and
// servers relay-1…relay-n on v1.
type world struct {
	emu   *emulator.Emulator
	vault *emulator.Vault
	key   rotation.KeyRef // versionless
	v1    emulator.KeyVersionInfo
	ids   []string
	watch *watch // set by rotator
}

// newWorld starts the world. It sets the managed identity environment, so
// tests that use it do not run in parallel.
func newWorld(t testing.TB, servers int) *world {
	t.Helper()
	emu := testenv.Start(t)
	t.Setenv("IDENTITY_ENDPOINT", emu.IdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", emu.IdentityHeader())

	w := &world{emu: emu, vault: emu.AddVault("kv1")}
	var err error
	if w.v1, err = w.vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if w.key, err = rotation.ParseKeyURL(w.v1.KID); err != nil {
		t.Fatal(err)
	}
	w.key = w.key.Versionless()
	w.ids = testenv.Servers(t, emu, servers, w.v1.KID)
	return w
}

// rotator returns a Rotator over the real Azure adapters, which reach the
// emulator in process so that it can run in a synctest bubble. Resource
// Manager is wrapped in w.watch.
func (w *world) rotator(t *testing.T) *rotation.Rotator {
	t.Helper()
	return w.rotatorWith(t, nil)
}

// rotatorWith is rotator with edit applied to the Config.
func (w *world) rotatorWith(t testing.TB, edit func(*rotation.Config)) *rotation.Rotator {
	t.Helper()
	co := azcore.ClientOptions{Transport: w.emu.InProcessTransport().(policy.Transporter)}
	_, keys, relays := testenv.Adapters(t, w.emu, co)
	w.watch = &watch{Servers: relays, inFlight: map[string]int{}, max: map[string]int{}}
	cfg := rotation.Config{Keys: keys, Servers: w.watch, Targets: testenv.Targets(t, w.key.String(), w.ids...),
		Logger: logcheck.Logger(t)}
	if edit != nil {
		edit(&cfg)
	}
	r, err := rotation.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (w *world) event(t testing.TB, v emulator.KeyVersionInfo) rotation.Event {
	t.Helper()
	return testenv.Event(t, w.emu, v, "kv1")
}

// written returns, per server, the versions its successful PATCHes wrote,
// in the order Resource Manager received them.
func (w *world) written() map[string][]string {
	out := make(map[string][]string)
	for _, r := range w.emu.Requests() {
		if r.Service != "arm" || r.Method != http.MethodPatch || r.Status != http.StatusOK {
			continue
		}
		url, _ := testenv.KeyURL(r.Body)
		id := strings.ToLower(r.Path)
		out[id] = append(out[id], url[strings.LastIndex(url, "/")+1:])
	}
	return out
}

// watch wraps Resource Manager to count PATCHes in flight per server and,
// when hold is set, to stop the first PATCH until hold is closed.
type watch struct {
	rotation.Servers

	mu       sync.Mutex
	inFlight map[string]int
	max      map[string]int
	held     bool
	hold     chan struct{} // nil: hold nothing
	holding  chan struct{} // closed when the first PATCH is held
}

func (w *watch) holdFirstPatch() {
	w.hold, w.holding = make(chan struct{}), make(chan struct{})
}

func (w *watch) SetKeyURL(ctx context.Context, id, url string) (rotation.Server, error) {
	w.mu.Lock()
	w.inFlight[id]++
	w.max[id] = max(w.max[id], w.inFlight[id])
	hold := w.hold != nil && !w.held
	w.held = w.held || hold
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.inFlight[id]--
		w.mu.Unlock()
	}()

	if hold {
		close(w.holding)
		<-w.hold
	}
	return w.Servers.SetKeyURL(ctx, id, url)
}

// maxInFlight returns the most PATCHes ever in flight for one server.
func (w *watch) maxInFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.max {
		n = max(n, m)
	}
	return n
}
