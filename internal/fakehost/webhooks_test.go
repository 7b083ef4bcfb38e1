package fakehost_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/internal/fakehost"
)

// The Event Grid extension's webhook and the admin endpoint: what the
// handler is sent for each, and what the caller is answered.
func TestWebhooks(t *testing.T) {
	const events = `[{"id":"1","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","data":{"Id":"a"}},
		{"id":"2","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","data":{"Id":"b"}}]`
	const validation = `[{"id":"v","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":{"validationCode":"abc"}}]`
	grid := "/runtime/webhooks/eventgrid?functionName=KeyNewVersionCreated"
	tests := []struct {
		name, url, kind, body string
		handler               int // the handler's status
		want                  int
		calls                 int    // invocations the handler got
		path                  string // the last one's path
		answer                string // in the answer's body
	}{
		{"notification", grid + "&code=k1", "Notification", events, 200, 202, 2, "/KeyNewVersionCreated", ""},
		{"one CloudEvent", grid + "&code=k1", "Notification", `{"specversion":"1.0","id":"1","type":"t","source":"s","data":{}}`, 200, 202, 1, "/KeyNewVersionCreated", ""},
		{"a failed invocation", grid + "&code=k1", "Notification", events, 500, 500, 2, "/KeyNewVersionCreated", ""},
		{"validation", grid + "&code=k1", "SubscriptionValidation", validation, 200, 200, 0, "", `{"validationResponse":"abc"}`},
		{"no key", grid, "Notification", events, 200, 401, 0, "", ""},
		{"not an Event Grid function", "/runtime/webhooks/eventgrid?functionName=Reconcile&code=k1", "Notification", events, 200, 404, 0, "", ""},
		{"no event type", grid + "&code=k1", "", events, 200, 400, 0, "", ""},
		{"timer by hand", "/admin/functions/Reconcile?code=k1", "", `{"input":""}`, 200, 202, 1, "/Reconcile", ""},
		{"timer by hand, failing", "/admin/functions/Reconcile?code=k1", "", `{"input":""}`, 500, 202, 1, "/Reconcile", ""},
		{"admin without input", "/admin/functions/Reconcile?code=k1", "", `{}`, 200, 400, 0, "", ""},
		{"admin, no key", "/admin/functions/Reconcile", "", `{"input":""}`, 200, 401, 0, "", ""},
		{"admin, no such function", "/admin/functions/Nope?code=k1", "", `{"input":""}`, 200, 404, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: tt.handler, contentType: "application/json",
				body: `{"Outputs":{},"Logs":[],"ReturnValue":null}`}
			h := start(t, rec, true, fakehost.Options{FunctionKey: "k1"})
			req := httptest.NewRequest(http.MethodPost, "http://localhost:7071"+tt.url, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			if tt.kind != "" {
				req.Header.Set("aeg-event-type", tt.kind)
			}

			resp, body := do(t, h, req)

			if resp.StatusCode != tt.want {
				t.Errorf("got %d %s, want %d", resp.StatusCode, body, tt.want)
			}
			if got := rec.count(); got != tt.calls {
				t.Errorf("got %d invocations, want %d", got, tt.calls)
			}
			if r, _ := rec.last(); tt.path != "" && (r == nil || r.URL.Path != tt.path) {
				t.Errorf("got last invocation %v, want POST %s", r, tt.path)
			}
			if tt.answer != "" && string(body) != tt.answer {
				t.Errorf("got body %s, want %s", body, tt.answer)
			}
		})
	}
}
