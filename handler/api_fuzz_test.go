package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// The fuzz tests drive outside input through the whole handler, with a
// rotator that does nothing, and check that every answer is deliberate:
// no panic, no 500 for input the rotator never saw, and a JSON body.

// idle is a Rotator that answers without work.
type idle struct{}

func (idle) Rotate(_ context.Context, req rotation.Request) rotation.Report {
	return rotation.Report{Key: req.Key.Versionless().String(), Servers: []rotation.ServerResult{}}
}

func (idle) HandleEvents(_ context.Context, events []rotation.Event) []rotation.EventResult {
	out := make([]rotation.EventResult, len(events))
	for i, e := range events {
		out[i] = rotation.EventResult{EventID: e.ID, Type: e.Type, Ignored: rotation.IgnoredNotSubscribed}
	}
	return out
}

func (idle) Reconcile(context.Context) []rotation.Report { return nil }
func (idle) Status(context.Context) rotation.Status {
	return rotation.Status{Keys: []rotation.KeyStatus{}}
}

func fuzzHandler(f *testing.F) http.Handler {
	f.Helper()
	h, err := handler.New(handler.Config{Rotator: idle{}})
	if err != nil {
		f.Fatal(err)
	}
	return h
}

// examples returns the Key Vault event examples in testdata/reference.
func examples(f *testing.F) [][]byte {
	f.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "reference", "*.json"))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no examples in testdata/reference: %v", err)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func serve(h http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Errorf("got %d %.300s, want no server error for input the rotator never failed on", rec.Code, rec.Body)
	}
	if !json.Valid(rec.Body.Bytes()) {
		t.Errorf("got body %.300q, want JSON", rec.Body)
	}
}

// FuzzInvocation sends host envelopes carrying events (the real examples
// as objects, strings and in arrays) to the Event Grid function.
func FuzzInvocation(f *testing.F) {
	for _, ex := range examples(f) {
		s, _ := json.Marshal(string(ex))
		f.Add([]byte(`{"Data":{"event":` + string(ex) + `},"Metadata":{}}`))
		f.Add([]byte(`{"Data":{"event":` + string(s) + `},"Metadata":{"RetryContext":{"RetryCount":1}}}`))
	}
	f.Add([]byte(`{"Data":{"event":"\"\\\"x\\\"\""}}`))
	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAnswer(t, serve(h, "/KeyNewVersionCreated", body))
	})
}

// FuzzRotateAPI sends bodies to POST /api/rotate.
func FuzzRotateAPI(f *testing.F) {
	for _, s := range []string{
		`{"key":"https://sample-kv.vault.azure.net/keys/newkey"}`,
		`{"key":"https://sample-kv.vault.azure.net/keys/newkey/ee059b2bb5bc48398a53b168c6cdcb10","dryRun":true,"allowOlder":true}`,
		`{"key":"https://other.vault.azure.net/keys/newkey"}`,
		`{"Key":"x","dryrun":1}`,
		`{"key":"https://sample-kv.vault.azure.net/keys/newkey"} {}`,
	} {
		f.Add([]byte(s))
	}
	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAnswer(t, serve(h, "/api/rotate", body))
	})
}

// FuzzReplayAPI sends saved events (a dead-letter blob's contents) to
// POST /api/replay.
func FuzzReplayAPI(f *testing.F) {
	for _, ex := range examples(f) {
		f.Add(ex)
	}
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"id":"1","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","deadLetterReason":"MaxDeliveryAttemptsExceeded","deliveryAttempts":30,"data":{"Id":"https://sample-kv.vault.azure.net/keys/newkey/v1"}}]`))
	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAnswer(t, serve(h, "/api/replay", body))
	})
}
