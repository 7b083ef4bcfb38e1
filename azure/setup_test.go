package azure_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// fixture is an emulator with vault kv1 holding key cmk (version v1) and
// servers relay-1…relay-n on v1, and the real SDK clients pointed at it.
type fixture struct {
	emu   *emulator.Emulator
	vault *emulator.Vault
	key   rotation.KeyRef // versionless
	v1    emulator.KeyVersionInfo
	ids   []string
}

// setup starts the fixture. It sets the managed identity environment, so
// tests that use it do not run in parallel.
func setup(t *testing.T, servers int) *fixture {
	t.Helper()
	emu := testenv.Start(t)
	t.Setenv("IDENTITY_ENDPOINT", emu.IdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", emu.IdentityHeader())
	t.Setenv("AZURE_CLIENT_ID", emu.ClientID())

	f := &fixture{emu: emu, vault: emu.AddVault("kv1")}
	var err error
	if f.v1, err = f.vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	f.key = mustKey(t, f.v1.KID).Versionless()
	f.ids = testenv.Servers(t, emu, servers, f.v1.KID)
	return f
}

// newVersion creates a new version of cmk, as a person rotating the key
// would, and returns it.
func (f *fixture) newVersion(t testing.TB) emulator.KeyVersionInfo {
	t.Helper()
	v, err := f.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustKey(t testing.TB, url string) rotation.KeyRef {
	t.Helper()
	ref, err := rotation.ParseKeyURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// adapters returns the Key Vault and Fluid Relay adapters over transport,
// authenticated by azidentity's managed identity credential.
func (f *fixture) adapters(t testing.TB, transport policy.Transporter) (*azure.KeyVault, *azure.FluidRelay) {
	t.Helper()
	_, keys, relays := testenv.Adapters(t, f.emu, azcore.ClientOptions{Transport: transport})
	return keys, relays
}

// targets maps f.key to the first servers (all when none are given).
func (f *fixture) targets(t testing.TB, ids ...string) rotation.Targets {
	t.Helper()
	if len(ids) == 0 {
		ids = f.ids
	}
	return testenv.Targets(t, f.key.String(), ids...)
}

// rotator builds a Rotator over real sockets; edit adjusts its Config.
func (f *fixture) rotator(t testing.TB, edit func(*rotation.Config)) *rotation.Rotator {
	t.Helper()
	return f.rotatorOver(t, f.emu.HTTPClient(), edit)
}

func (f *fixture) rotatorOver(t testing.TB, transport policy.Transporter, edit func(*rotation.Config)) *rotation.Rotator {
	t.Helper()
	keys, relays := f.adapters(t, transport)
	cfg := rotation.Config{Keys: keys, Servers: relays, Targets: f.targets(t), Logger: logcheck.Logger(t)}
	if edit != nil {
		edit(&cfg)
	}
	r, err := rotation.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// event decodes the Event Grid event the emulator would deliver for v.
func (f *fixture) event(t testing.TB, v emulator.KeyVersionInfo) rotation.Event {
	t.Helper()
	return testenv.Event(t, f.emu, v, "kv1")
}

// patches returns the recorded PATCH requests to Resource Manager.
func (f *fixture) patches() []emulator.Request {
	var out []emulator.Request
	for _, r := range f.emu.Requests() {
		if r.Service == "arm" && r.Method == http.MethodPatch {
			out = append(out, r)
		}
	}
	return out
}

// patchesPerServer counts successful PATCHes by server ID.
func (f *fixture) patchesPerServer() map[string]int {
	n := make(map[string]int)
	for _, r := range f.patches() {
		if r.Status == http.StatusOK {
			n[strings.ToLower(r.Path)]++
		}
	}
	return n
}

// confirmedAfterPatch reports whether a successful GET of id followed its
// last successful PATCH.
func (f *fixture) confirmedAfterPatch(id string) bool {
	reqs := f.emu.Requests()
	last := -1
	for i, r := range reqs {
		if r.Service == "arm" && r.Method == http.MethodPatch && r.Status == http.StatusOK && strings.EqualFold(r.Path, id) {
			last = i
		}
	}
	return last >= 0 && slices.ContainsFunc(reqs[last+1:], func(r emulator.Request) bool {
		return r.Service == "arm" && r.Method == http.MethodGet && r.Status == http.StatusOK && strings.EqualFold(r.Path, id)
	})
}

// outcomes summarises a report as server ID → outcome.
func outcomes(rep rotation.Report) map[string]rotation.Outcome {
	out := make(map[string]rotation.Outcome)
	for _, s := range rep.Servers {
		out[s.ID] = s.Outcome
	}
	return out
}

// transporter is the emulator's in-process transport, for synctest bubbles.
func transporter(f *fixture) policy.Transporter {
	return f.emu.InProcessTransport().(policy.Transporter)
}
