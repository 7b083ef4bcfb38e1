package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/internal/fakehost"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// fixture is the emulator with vault kv holding key cmk (versions v1 and
// v2, v2 current), servers relay-1…3 on v1 and relay-follow versionless,
// all subscribed; the real rotator and Azure adapters; the handler on a
// real loopback listener; and a fake host in front of it, playing the
// app's host.json and function.json files.
type fixture struct {
	emu     *emulator.Emulator
	vault   *emulator.Vault
	key     rotation.KeyRef // versionless
	v1, v2  emulator.KeyVersionInfo
	ids     []string // relay-1…3
	follow  string   // relay-follow
	host    *fakehost.Host
	logs    *syncBuffer
	baseURL string
}

// setup sets the managed identity environment, so tests that use it do
// not run in parallel.
func setup(t *testing.T) *fixture {
	t.Helper()
	emu := testenv.Start(t)

	f := &fixture{emu: emu, vault: emu.AddVault("kv")}
	var err error
	if f.v1, err = f.vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if f.v2, err = f.vault.RotateKey("cmk"); err != nil {
		t.Fatal(err)
	}
	f.key = mustKey(t, f.v1.KID).Versionless()
	f.ids = testenv.Servers(t, emu, 3, f.v1.KID)
	f.follow = f.putServer(t, "relay-follow", f.key.String())

	targets := testenv.Targets(t, f.key.String(), append(append([]string{}, f.ids...), f.follow)...)

	// No SDK retries: a fault must reach the rotator at once, not after
	// azcore's backoff.
	co := azcore.ClientOptions{Transport: emu.HTTPClient(), Retry: policy.RetryOptions{MaxRetries: -1}}
	_, keys, servers := testenv.Adapters(t, emu, co)

	f.logs = &syncBuffer{}
	log := slog.New(handler.LogHandler(slog.NewJSONHandler(logcheck.Writer(t, f.logs), &slog.HandlerOptions{Level: slog.LevelDebug})))
	rot, err := rotation.New(rotation.Config{
		Keys:    keys,
		Servers: servers,
		Targets: targets,
		Logger:  log,
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := handler.New(handler.Config{
		Rotator: rot,
		Logger:  log,
		Credential: func(context.Context) handler.CredentialStatus {
			return handler.CredentialStatus{OK: true}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.baseURL = srv.URL
	app, err := fakehost.LoadApp("..")
	if err != nil {
		t.Fatal(err)
	}
	if f.host, err = fakehost.New(srv.URL, app, fakehost.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := f.host.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) putServer(t *testing.T, name, keyURL string) string {
	t.Helper()
	id, err := f.emu.PutServer(emulator.ServerSpec{Name: name, KeyURL: keyURL})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// keyURL returns a server's key URL as the emulator holds it.
func (f *fixture) keyURL(t *testing.T, id string) string {
	t.Helper()
	u, ok := f.emu.ServerKeyURL(id)
	if !ok {
		t.Fatalf("server %s: got none, want it to exist", id)
	}
	return u
}

// patches counts PATCHes the emulator's Resource Manager received.
func (f *fixture) patches() int {
	n := 0
	for _, r := range f.emu.Requests() {
		if r.Service == "arm" && r.Method == http.MethodPatch {
			n++
		}
	}
	return n
}

// api sends a client request with a JSON body, and the function key,
// to the host's public endpoint.
func (f *fixture) api(t *testing.T, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	return f.apiAs(t, method, path, "application/json", body)
}

// apiAs is api with the given Content-Type; empty sends none.
func (f *fixture) apiAs(t *testing.T, method, path, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, "http://localhost:7071"+path, rd)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("x-functions-key", f.host.FunctionKey())
	resp, err := f.host.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}

func mustKey(t testing.TB, url string) rotation.KeyRef {
	t.Helper()
	ref, err := rotation.ParseKeyURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// lines returns the JSON log records written so far.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(s.buf.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}
