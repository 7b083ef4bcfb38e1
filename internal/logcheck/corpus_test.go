package logcheck_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
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

// lockedBuffer is a bytes.Buffer safe for the rotator's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestOrdinaryLines runs rotations, refusals and Azure failures through
// the real handler, rotator and adapters, logging at Debug as JSON (the
// host's format) and as text, and checks that none of the product's
// ordinary lines, with their key versions, server IDs and error bodies,
// is taken for a credential.
func TestOrdinaryLines(t *testing.T) {
	emu := testenv.Start(t)
	vault := emu.AddVault("kv")
	v1, err := vault.CreateKey("cmk", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := testenv.Servers(t, emu, 3, v1.KID)
	key := vault.URL() + "/keys/cmk"
	co := azcore.ClientOptions{Transport: emu.HTTPClient(), Retry: policy.RetryOptions{MaxRetries: -1}}
	_, keys, relays := testenv.Adapters(t, emu, co)

	var logs lockedBuffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	log := slog.New(slog.NewMultiHandler(handler.LogHandler(slog.NewJSONHandler(&logs, opts)),
		slog.NewTextHandler(&logs, opts)))
	rot, err := rotation.New(rotation.Config{Keys: keys, Servers: relays,
		Targets: testenv.Targets(t, key, ids...), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	h, err := handler.New(handler.Config{Rotator: rot, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Azure-Functions-InvocationId", "00000000-0000-0000-0000-000000000001")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	deliver := func(v emulator.KeyVersionInfo) {
		ev, err := json.Marshal(emu.KeyEvent(emulator.KeyNewVersionCreated, v, "kv"))
		if err != nil {
			t.Fatal(err)
		}
		post("/KeyNewVersionCreated", `{"Data":{"event":`+string(ev)+`},"Metadata":{}}`)
	}
	rotate := func() emulator.KeyVersionInfo {
		v, err := vault.RotateKey("cmk")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	remove := emu.InjectFault(emulator.Fault{Service: "identity", Status: http.StatusInternalServerError})
	deliver(rotate())
	remove()
	deliver(rotate())
	post("/api/rotate", `{"key":"`+key+`","dryRun":true}`)
	post("/api/rotate", `{"key":"https://nope.vault.azure.net/keys/x"}`)
	post("/KeyNewVersionCreated", `{"Data":{"event":{"id":"x",`+
		`"eventType":"Microsoft.KeyVault.KeyNewVersionCreated","data":{"Id":42}}}}`)
	for _, f := range []emulator.Fault{
		{Service: "arm", Method: http.MethodPatch, Status: http.StatusUnauthorized},
		{Service: "arm", Method: http.MethodPatch, Status: http.StatusTooManyRequests, RetryAfter: 1},
		{Service: "arm", Method: http.MethodGet, Status: http.StatusInternalServerError},
		{Service: "arm", Method: http.MethodPatch, Status: http.StatusBadRequest, Code: "InvalidRequestContent"},
		{Service: "keyvault", Status: http.StatusForbidden},
		{Service: "arm", Reset: true},
	} {
		remove := emu.InjectFault(f)
		deliver(rotate())
		remove()
	}
	v := rotate()
	if err := vault.SetEnabled("cmk", v.Version, false); err != nil {
		t.Fatal(err)
	}
	deliver(v)
	post("/Reconcile", `{"Data":{"timer":{"IsPastDue":false}},"Metadata":{}}`)
	req := httptest.NewRequest(http.MethodGet, "/api/status", nil)
	h.ServeHTTP(httptest.NewRecorder(), req)

	text := logs.String()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`server rotated`),
		regexp.MustCompile(`server not rotated`),
		regexp.MustCompile(`level=ERROR`),
		regexp.MustCompile(`"invocation_id":"`),
		regexp.MustCompile(`get token: managed identity refused`),
		regexp.MustCompile(`/providers/Microsoft\.FluidRelay/fluidRelayServers/relay-1`),
		regexp.MustCompile(`"key_version":"[0-9a-f]{32}"`),
		regexp.MustCompile(`: 401 Unauthorized`),
		regexp.MustCompile(`: 403 Forbidden`),
	} {
		if !want.MatchString(text) {
			t.Errorf("got logs without %s, want the run to log it:\n%s", want, text)
		}
	}
	if got := logcheck.Scan(text); len(got) != 0 {
		t.Errorf("got %v in the product's ordinary lines, want nothing:\n%s", got, text)
	}
}
