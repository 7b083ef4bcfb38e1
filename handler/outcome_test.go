package handler_test

import (
	"encoding/json"
	"net/http"
	"path"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// One server whose update Resource Manager refuses with a 401 (retryable:
// a token may be refreshed, a permission may propagate; azcore does not
// retry it, so nothing waits) and one server that is gone (final). The
// Event Grid invocation fails, since a redelivery would move the first;
// the API answers 207, not 503: a client told to retry would retry for
// ever, since the gone server needs a person.
func TestRetryableBesideFinalFailure(t *testing.T) {
	p := newInproc(t, 2)
	p.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch,
		PathSuffix: path.Base(p.ids[0]), Status: http.StatusUnauthorized})
	if err := p.emu.DeleteServer(p.ids[1]); err != nil {
		t.Fatal(err)
	}
	v2, err := p.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}

	if got := p.invoke(p.event(t, v2)); got != http.StatusInternalServerError {
		t.Errorf("invocation: got %d, want 500 so that Event Grid redelivers", got)
	}

	rec := p.post("/api/rotate", []byte(`{"key":"`+p.vault.URL()+`/keys/cmk"}`))
	if rec.Code != http.StatusMultiStatus {
		t.Errorf("/api/rotate: got %d %s, want 207", rec.Code, rec.Body)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "" {
		t.Errorf("/api/rotate: got Retry-After %q, want none", ra)
	}
	var rep struct {
		Retryable *bool `json:"retryable"`
		Servers   []struct {
			Outcome   string `json:"outcome"`
			Retryable bool   `json:"retryable"`
		} `json:"servers"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Retryable == nil || *rep.Retryable {
		t.Errorf("got retryable %v, want false", rep.Retryable)
	}
	retryable := 0
	for _, s := range rep.Servers {
		if s.Outcome == "failed" && s.Retryable {
			retryable++
		}
	}
	if retryable != 1 {
		t.Errorf("got %d retryable servers in %s, want 1", retryable, rec.Body)
	}
}
