package handler_test

import (
	"bytes"
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
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// inproc is the handler over the real rotator and adapters, reaching a
// zero-latency emulator without sockets: vault kv with key cmk (v1),
// servers relay-1…n on v1, all subscribed. Requests go straight to the
// handler's ServeHTTP, so what is measured is the product.
type inproc struct {
	emu   *emulator.Emulator
	vault *emulator.Vault
	v1    emulator.KeyVersionInfo
	ids   []string
	h     http.Handler
	logs  *bytes.Buffer
	seen  *bearerTap
}

// bearerTap passes requests on and keeps every bearer token sent.
type bearerTap struct {
	next   policy.Transporter
	mu     sync.Mutex
	tokens map[string]bool
}

func (b *bearerTap) Do(req *http.Request) (*http.Response, error) {
	if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
		b.mu.Lock()
		b.tokens[tok] = true
		b.mu.Unlock()
	}
	return b.next.Do(req)
}

// tokens returns every bearer token the product sent to Azure.
func (p *inproc) tokens(t testing.TB) []string {
	t.Helper()
	p.seen.mu.Lock()
	defer p.seen.mu.Unlock()
	var out []string
	for tok := range p.seen.tokens {
		out = append(out, tok)
	}
	return out
}

func newInproc(t testing.TB, servers int) *inproc {
	t.Helper()
	emu := testenv.Start(t)

	p := &inproc{emu: emu, vault: emu.AddVault("kv"), logs: &bytes.Buffer{}}
	var err error
	if p.v1, err = p.vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	p.ids = testenv.Servers(t, emu, servers, p.v1.KID)
	targets := testenv.Targets(t, p.vault.URL()+"/keys/cmk", p.ids...)

	p.seen = &bearerTap{next: emu.InProcessTransport().(policy.Transporter), tokens: map[string]bool{}}
	_, keys, relays := testenv.Adapters(t, emu, azcore.ClientOptions{Transport: p.seen})

	log := slog.New(handler.LogHandler(slog.NewJSONHandler(logcheck.Writer(t, p.logs), &slog.HandlerOptions{Level: slog.LevelDebug})))
	rot, err := rotation.New(rotation.Config{Keys: keys, Servers: relays, Targets: targets, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if p.h, err = handler.New(handler.Config{Rotator: rot, Logger: log}); err != nil {
		t.Fatal(err)
	}
	return p
}

// invoke sends an Event Grid invocation carrying event and returns the
// answer's status.
func (p *inproc) invoke(event []byte) int {
	env := append(append([]byte(`{"Data":{"event":`), event...), `},"Metadata":{"sys":{"MethodName":"KeyNewVersionCreated"}}}`...)
	return p.post("/KeyNewVersionCreated", env).Code
}

func (p *inproc) post(path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", "00000000-0000-0000-0000-000000000001")
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, req)
	return rec
}

// post a body read from r, for bodies too large to hold twice.
func (p *inproc) postReader(path string, r io.Reader) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, r)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, req)
	return rec
}

func (p *inproc) event(t testing.TB, v emulator.KeyVersionInfo) []byte {
	t.Helper()
	b, err := json.Marshal(p.emu.KeyEvent(emulator.KeyNewVersionCreated, v, "kv"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
