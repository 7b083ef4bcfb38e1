package handler_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/internal/fakehost"
	"github.com/cmkrotator/cmkrotator/rotation"
)

func TestReady(t *testing.T) {
	f := setup(t)
	resp, err := http.Get(f.baseURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("got %d, want 200", resp.StatusCode)
	}
}

// TestKeyNewVersionCreated delivers a real-shaped event in both schemas,
// as an object and as a JSON-encoded string, and checks every pinned
// server reaches the new version while the versionless one is left alone.
func TestKeyNewVersionCreated(t *testing.T) {
	f := setup(t)
	for _, schema := range []string{"EventGrid", "CloudEvents"} {
		for _, asString := range []bool{false, true} {
			name := schema
			if asString {
				name += "/string"
			}
			t.Run(name, func(t *testing.T) {
				nv, err := f.vault.RotateKey("cmk")
				if err != nil {
					t.Fatal(err)
				}
				var ev any = f.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv")
				if schema == "CloudEvents" {
					ev = f.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, nv, "kv")
				}
				res, err := f.host.EventGrid(context.Background(), "KeyNewVersionCreated", mustJSON(t, ev),
					fakehost.EventOptions{AsString: asString})
				if err != nil {
					t.Fatal(err)
				}
				if !res.Succeeded || res.Status != http.StatusOK {
					t.Fatalf("got status %d succeeded %t (%s), want 200 and success", res.Status, res.Succeeded, res.Failure)
				}
				for _, id := range f.ids {
					if got := f.keyURL(t, id); got != nv.KID {
						t.Errorf("server %s: got %s, want %s", id, got, nv.KID)
					}
				}
				if got, want := f.keyURL(t, f.follow), f.key.String(); got != want {
					t.Errorf("versionless server: got %s, want %s", got, want)
				}
				if !containsLine(res.Logs, "server rotated") {
					t.Errorf("got logs %q, want a line about a rotated server", res.Logs)
				}
			})
		}
	}
}

// TestInvocationLogs checks that every record logged during an
// invocation carries its invocation id, for each function as the host
// calls it (the API forwarded, with X-Azure-Functions-InvocationId), and
// that every record naming a server also names the key and version.
func TestInvocationLogs(t *testing.T) {
	f := setup(t)
	nv, err := f.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	ev := mustJSON(t, f.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv"))
	tests := []struct {
		name   string
		invoke func(t *testing.T) string // the invocation id when the host reports it
	}{
		{"KeyNewVersionCreated", func(t *testing.T) string {
			res, err := f.host.EventGrid(context.Background(), "KeyNewVersionCreated", ev, fakehost.EventOptions{})
			if err != nil || !res.Succeeded {
				t.Fatalf("got %+v, %v, want a successful invocation", res, err)
			}
			return res.InvocationID
		}},
		{"Rotate", func(t *testing.T) string {
			if resp, data := f.api(t, http.MethodPost, "/api/rotate", `{"key":"`+f.key.String()+`"}`); resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d %s, want 200", resp.StatusCode, data)
			}
			return ""
		}},
		{"Replay", func(t *testing.T) string {
			if resp, data := f.api(t, http.MethodPost, "/api/replay", "["+string(ev)+"]"); resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d %s, want 200", resp.StatusCode, data)
			}
			return ""
		}},
		{"Status", func(t *testing.T) string {
			if resp, data := f.api(t, http.MethodGet, "/api/status", ""); resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d %s, want 200", resp.StatusCode, data)
			}
			return ""
		}},
		{"Reconcile", func(t *testing.T) string {
			// Drift for the reconcile to fix, so that it logs about a server.
			if err := f.emu.SetServerKeyURL(f.ids[1], f.v1.KID); err != nil {
				t.Fatal(err)
			}
			res, err := f.host.Timer(context.Background(), "Reconcile", fakehost.TimerOptions{})
			if err != nil || !res.Succeeded {
				t.Fatalf("got %+v, %v, want a successful invocation", res, err)
			}
			return res.InvocationID
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.logs.lines(t))
			want := tt.invoke(t)
			records := f.logs.lines(t)[before:]
			if len(records) == 0 {
				t.Fatal("got no records, want the invocation's")
			}
			if want == "" {
				want, _ = records[0]["invocation_id"].(string)
			}
			servers := 0
			for _, l := range records {
				if id, _ := l["invocation_id"].(string); id == "" || id != want {
					t.Errorf("record %q %v: got invocation_id %v, want %q", l["msg"], l, l["invocation_id"], want)
				}
				if _, ok := l["server_id"]; !ok {
					continue
				}
				servers++
				if name, _ := l["key_name"].(string); name != "cmk" {
					t.Errorf("record %q %v: got key_name %v, want cmk", l["msg"], l, l["key_name"])
				}
				if _, ok := l["key_version"].(string); !ok {
					t.Errorf("record %q %v: got no key_version, want one", l["msg"], l)
				}
			}
			if want == "" {
				t.Error("got no invocation id, want the host's")
			}
			if tt.name != "Status" && servers == 0 {
				t.Errorf("got no record about a server in %d records, want some", len(records))
			}
		})
	}
}

// TestEventOutcomes checks which outcomes fail the invocation: only those
// a redelivery could fix.
func TestEventOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, f *fixture) (event []byte, cleanup func())
		wantOK  bool
		check   func(t *testing.T, f *fixture)
	}{
		{
			name: "not subscribed",
			prepare: func(t *testing.T, f *fixture) ([]byte, func()) {
				other, err := f.vault.CreateKey("other", emulator.KeyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return mustJSON(t, f.emu.KeyEvent(emulator.KeyNewVersionCreated, other, "kv")), nil
			},
			wantOK: true,
			check: func(t *testing.T, f *fixture) {
				if got := f.patches(); got != 0 {
					t.Errorf("got %d PATCHes, want none", got)
				}
			},
		},
		{
			name: "not a rotation event",
			prepare: func(t *testing.T, f *fixture) ([]byte, func()) {
				return mustJSON(t, f.emu.KeyEvent(emulator.KeyNearExpiry, f.v2, "kv")), nil
			},
			wantOK: true,
		},
		{
			name: "undecodable event is dropped",
			prepare: func(t *testing.T, f *fixture) ([]byte, func()) {
				return []byte(`{"id":"x","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","data":{"Id":42}}`), nil
			},
			wantOK: true,
		},
		{
			name: "Resource Manager unavailable",
			prepare: func(t *testing.T, f *fixture) ([]byte, func()) {
				nv, err := f.vault.RotateKey("cmk")
				if err != nil {
					t.Fatal(err)
				}
				remove := f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: 503})
				return mustJSON(t, f.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv")), remove
			},
			wantOK: false,
		},
		{
			name: "server gone",
			prepare: func(t *testing.T, f *fixture) ([]byte, func()) {
				nv, err := f.vault.RotateKey("cmk")
				if err != nil {
					t.Fatal(err)
				}
				if err := f.emu.DeleteServer(f.ids[0]); err != nil {
					t.Fatal(err)
				}
				return mustJSON(t, f.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv")), nil
			},
			wantOK: true,
			check: func(t *testing.T, f *fixture) {
				if got := f.patches(); got != 2 {
					t.Errorf("got %d PATCHes, want 2 (the other servers)", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			ev, cleanup := tt.prepare(t, f)
			f.emu.ResetRequests()
			res, err := f.host.EventGrid(context.Background(), "KeyNewVersionCreated", ev, fakehost.EventOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Succeeded != tt.wantOK {
				t.Errorf("got succeeded %t (status %d, %s), want %t", res.Succeeded, res.Status, res.Failure, tt.wantOK)
			}
			if got := res.ContentType; got != "application/json" {
				t.Errorf("got content type %q, want application/json", got)
			}
			if tt.check != nil {
				tt.check(t, f)
			}
			if cleanup == nil {
				return
			}
			// A redelivery after the fault clears succeeds.
			cleanup()
			res, err = f.host.EventGrid(context.Background(), "KeyNewVersionCreated", ev, fakehost.EventOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Succeeded {
				t.Errorf("redelivery: got failure %q, want success", res.Failure)
			}
		})
	}
}

// TestBadEnvelope sends trigger invocations that cannot be decoded. A
// redelivery would carry the same bytes, so each must succeed (Event Grid
// does not retry it for a day) and say, as an error in the invocation's
// Logs and in the process log, that the event was dropped and why.
func TestBadEnvelope(t *testing.T) {
	f := setup(t)
	tests := []struct {
		name     string
		function string
		body     string
		wantWhy  string
	}{
		{"not JSON", "KeyNewVersionCreated", `hello`, "invalid character"},
		{"no Data", "KeyNewVersionCreated", `{"Metadata":{}}`, "no Data"},
		{"no event", "KeyNewVersionCreated", `{"Data":{},"Metadata":{}}`, `binding \"event\"`},
		{"event a number", "KeyNewVersionCreated", `{"Data":{"event":"42"},"Metadata":{}}`, "want a JSON object or array"},
		{"too deep", "KeyNewVersionCreated", `{"Data":{"event":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}`, "nested too deeply"},
		{"too large", "KeyNewVersionCreated", `{"Data":{"event":"` + strings.Repeat("a", 12<<20) + `"}}`, "body too large"},
		{"timer too deep", "Reconcile", `{"Data":{"timer":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}`, "nested too deeply"},
		{"timer too large", "Reconcile", `{"Data":{"timer":"` + strings.Repeat("a", 12<<20) + `"}}`, "body too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.emu.ResetRequests()
			res, err := f.host.Invoke(context.Background(), tt.function, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != http.StatusOK || !res.Succeeded {
				t.Errorf("got %d succeeded %t (%s), want 200 and a successful invocation", res.Status, res.Succeeded, res.Failure)
			}
			if got := res.ContentType; got != "application/json" {
				t.Errorf("got content type %q, want application/json", got)
			}
			if !containsLine(res.Logs, "ERROR") || !containsLine(res.Logs, "dropped: undecodable") || !containsLine(res.Logs, tt.wantWhy) {
				t.Errorf("got Logs %q, want an error line saying it was dropped as undecodable, with %q", res.Logs, tt.wantWhy)
			}
			var logged bool
			for _, l := range f.logs.lines(t) {
				msg, _ := l["msg"].(string)
				if l["invocation_id"] == res.InvocationID && l["level"] == "ERROR" && strings.Contains(msg, "dropped: undecodable") {
					logged = true
				}
			}
			if !logged {
				t.Errorf("got no process log error for invocation %s, want one saying it was dropped", res.InvocationID)
			}
			if n := len(f.emu.Requests()); n != 0 {
				t.Errorf("got %d calls to Azure, want none", n)
			}
		})
	}
	// Still serving.
	if res, err := f.host.Timer(context.Background(), "Reconcile", fakehost.TimerOptions{}); err != nil || !res.Succeeded {
		t.Errorf("after the poison envelopes: got %+v, %v, want a successful reconcile", res, err)
	}
}

// TestReconcile: after a rotation to v2, an infrastructure deployment
// puts relay-2 back on v1; the timer moves it forward again, leaves the
// others alone, and says so in its logs.
func TestReconcile(t *testing.T) {
	f := setup(t)
	if resp, data := f.api(t, http.MethodPost, "/api/rotate", `{"key":"`+f.key.String()+`"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("rotation to v2: got %d %s, want 200", resp.StatusCode, data)
	}
	reverted := f.ids[1]
	if err := f.emu.SetServerKeyURL(reverted, f.v1.KID); err != nil {
		t.Fatal(err)
	}
	f.emu.ResetRequests()

	res, err := f.host.Timer(context.Background(), "Reconcile", fakehost.TimerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded {
		t.Fatalf("got failure %q, want success", res.Failure)
	}
	for _, id := range f.ids {
		if got := f.keyURL(t, id); got != f.v2.KID {
			t.Errorf("server %s: got %s, want %s", id, got, f.v2.KID)
		}
	}
	if got := f.patches(); got != 1 {
		t.Errorf("got %d PATCHes, want 1: only the reverted server moves", got)
	}
	var rotated []string
	for _, l := range f.logs.lines(t) {
		if l["invocation_id"] == res.InvocationID && l["msg"] == "server rotated" {
			rotated = append(rotated, l["server_id"].(string))
			if l["previous_version"] != f.v1.Version || l["key_version"] != f.v2.Version {
				t.Errorf("got %v, want relay-2 rotated from %s to %s", l, f.v1.Version, f.v2.Version)
			}
		}
	}
	if diff := cmp.Diff([]string{reverted}, rotated); diff != "" {
		t.Errorf("servers rotated (-want +got):\n%s", diff)
	}
	if !containsLine(res.Logs, "reconcile done") || !containsLine(res.Logs, "rotated=1") {
		t.Errorf("got logs %q, want a reconcile summary with one server rotated", res.Logs)
	}
}

func TestRotateAPI(t *testing.T) {
	tests := []struct {
		name        string
		prepare     func(t *testing.T, f *fixture) string // returns the body
		wantStatus  int
		wantProblem string // problem type, for 4xx
		check       func(t *testing.T, f *fixture, body []byte)
		retryAfter  string // Retry-After with 503; zero: the default "30"
	}{
		{
			name:       "rotates to current",
			prepare:    func(t *testing.T, f *fixture) string { return `{"key":"` + f.key.String() + `"}` },
			wantStatus: http.StatusOK,
			check: func(t *testing.T, f *fixture, body []byte) {
				rep := decodeReport(t, body)
				if rep.TargetVersion != f.v2.Version {
					t.Errorf("got target %s, want %s", rep.TargetVersion, f.v2.Version)
				}
				got := map[rotation.Outcome]int{}
				for _, s := range rep.Servers {
					got[s.Outcome]++
				}
				if diff := cmp.Diff(map[rotation.Outcome]int{rotation.Rotated: 3, rotation.Skipped: 1}, got); diff != "" {
					t.Errorf("outcomes (-want +got):\n%s", diff)
				}
			},
		},
		{
			name:       "dry run writes nothing",
			prepare:    func(t *testing.T, f *fixture) string { return `{"key":"` + f.key.String() + `","dryRun":true}` },
			wantStatus: http.StatusOK,
			check: func(t *testing.T, f *fixture, body []byte) {
				if got := f.patches(); got != 0 {
					t.Errorf("got %d PATCHes, want none", got)
				}
				if rep := decodeReport(t, body); !rep.DryRun || !rep.Servers[0].WouldPatch {
					t.Errorf("got %+v, want a dry-run report with wouldPatch", rep)
				}
			},
		},
		{
			name: "older version needs allowOlder",
			prepare: func(t *testing.T, f *fixture) string {
				for _, id := range f.ids {
					if err := f.emu.SetServerKeyURL(id, f.v2.KID); err != nil {
						t.Fatal(err)
					}
				}
				return `{"key":"` + f.v1.KID + `","allowOlder":true}`
			},
			wantStatus: http.StatusOK,
			check: func(t *testing.T, f *fixture, _ []byte) {
				if got := f.keyURL(t, f.ids[0]); got != f.v1.KID {
					t.Errorf("got %s, want %s", got, f.v1.KID)
				}
			},
		},
		{
			name: "disabled version refused",
			prepare: func(t *testing.T, f *fixture) string {
				if err := f.vault.SetEnabled("cmk", f.v1.Version, false); err != nil {
					t.Fatal(err)
				}
				return `{"key":"` + f.v1.KID + `"}`
			},
			wantStatus: http.StatusUnprocessableEntity,
		},
		{
			name: "missing version",
			prepare: func(t *testing.T, f *fixture) string {
				return `{"key":"` + f.key.String() + `/0123456789abcdef0123456789abcdef"}`
			},
			wantStatus: http.StatusNotFound,
		},
		{
			name: "Resource Manager unavailable",
			prepare: func(t *testing.T, f *fixture) string {
				f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: 503})
				return `{"key":"` + f.key.String() + `"}`
			},
			wantStatus: http.StatusServiceUnavailable,
		},
		{
			name: "Resource Manager throttles past the deadline",
			prepare: func(t *testing.T, f *fixture) string {
				f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, Status: 429,
					Code: "SubscriptionRequestsThrottled", RetryAfter: 2 * time.Minute})
				return `{"key":"` + f.key.String() + `"}`
			},
			wantStatus: http.StatusServiceUnavailable,
			retryAfter: "120",
			check: func(t *testing.T, f *fixture, body []byte) {
				for _, s := range decodeReport(t, body).Servers {
					if s.Outcome != rotation.Failed || !s.Retryable {
						t.Errorf("%s: got %s (retryable %v), want failed and retryable", s.ID, s.Outcome, s.Retryable)
					}
				}
			},
		},
		{
			name: "one server gone",
			prepare: func(t *testing.T, f *fixture) string {
				if err := f.emu.DeleteServer(f.ids[1]); err != nil {
					t.Fatal(err)
				}
				return `{"key":"` + f.key.String() + `"}`
			},
			wantStatus: http.StatusMultiStatus,
		},
		{
			name: "vault answers an unexpected error",
			prepare: func(t *testing.T, f *fixture) string {
				f.emu.InjectFault(emulator.Fault{Service: "keyvault", Method: http.MethodGet, Status: 400, Code: "BadParameter"})
				return `{"key":"` + f.key.String() + `"}`
			},
			wantStatus: http.StatusBadGateway,
		},
		{
			name: "unknown key",
			prepare: func(t *testing.T, f *fixture) string {
				return `{"key":"https://` + f.key.Vault + `/keys/other"}`
			},
			wantStatus: http.StatusNotFound, wantProblem: "urn:cmkrotator:problem:unknown-key",
			check: func(t *testing.T, f *fixture, _ []byte) {
				if reqs := f.emu.Requests(); len(reqs) != 0 {
					t.Errorf("got %d requests to Azure, want none for a key the rotator does not map", len(reqs))
				}
			},
		},
		{"malformed JSON", func(*testing.T, *fixture) string { return `{"key":` }, http.StatusBadRequest, "urn:cmkrotator:problem:bad-json", nil, ""},
		{"unknown field", func(t *testing.T, f *fixture) string { return `{"key":"` + f.key.String() + `","dryrun":true}` }, http.StatusBadRequest, "urn:cmkrotator:problem:invalid-body", nil, ""},
		{"field given twice", func(t *testing.T, f *fixture) string { return `{"key":"` + f.key.String() + `","key":"x"}` }, http.StatusBadRequest, "urn:cmkrotator:problem:invalid-body", nil, ""},
		{"wrong type", func(t *testing.T, f *fixture) string { return `{"key":"` + f.key.String() + `","dryRun":1}` }, http.StatusBadRequest, "urn:cmkrotator:problem:invalid-body", nil, ""},
		{"trailing data", func(t *testing.T, f *fixture) string { return `{"key":"` + f.key.String() + `"} {}` }, http.StatusBadRequest, "urn:cmkrotator:problem:bad-json", nil, ""},
		{"missing key", func(*testing.T, *fixture) string { return `{}` }, http.StatusBadRequest, "urn:cmkrotator:problem:bad-request", nil, ""},
		{"not a key URL", func(*testing.T, *fixture) string { return `{"key":"https://kv.vault.azure.net/secrets/x"}` }, http.StatusBadRequest, "urn:cmkrotator:problem:bad-request", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			body := tt.prepare(t, f)
			f.emu.ResetRequests()
			resp, data := f.api(t, http.MethodPost, "/api/rotate", body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, data, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusServiceUnavailable {
				want := tt.retryAfter
				if want == "" {
					want = "30"
				}
				if got := resp.Header.Get("Retry-After"); got != want {
					t.Errorf("got Retry-After %q, want %q", got, want)
				}
			}
			if tt.wantProblem != "" {
				var p handler.Problem
				if err := json.Unmarshal(data, &p); err != nil {
					t.Fatal(err)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("got content type %q, want application/problem+json", ct)
				}
				if p.Type != tt.wantProblem || p.Status != tt.wantStatus || p.Detail == "" {
					t.Errorf("got problem %+v, want type %s, status %d and a detail", p, tt.wantProblem, tt.wantStatus)
				}
			}
			if tt.check != nil {
				tt.check(t, f, data)
			}
		})
	}
}

func TestAPILimits(t *testing.T) {
	f := setup(t)
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
	}{
		{"12 MB rotate body", http.MethodPost, "/api/rotate", `{"key":"` + strings.Repeat("a", 12<<20) + `"}`, http.StatusRequestEntityTooLarge},
		{"12 MB replay body", http.MethodPost, "/api/replay", "[" + strings.Repeat(" ", 12<<20) + "]", http.StatusRequestEntityTooLarge},
		{"deep JSON", http.MethodPost, "/api/replay", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := f.api(t, tt.method, tt.path, tt.body)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("got %d %.200s, want %d", resp.StatusCode, data, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("got content type %q, want application/problem+json", ct)
			}
		})
	}

	// A route or method function.json does not declare never reaches the
	// handler: the host answers 404 with no body. Called directly, the
	// handler says what is wrong.
	for _, tt := range []struct {
		method, path string
		direct       int
	}{
		{http.MethodGet, "/api/rotate", http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/nothing", http.StatusNotFound},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, data := f.api(t, tt.method, tt.path, "")
			if resp.StatusCode != http.StatusNotFound || len(data) != 0 {
				t.Errorf("through the host: got %d %q, want 404 and no body", resp.StatusCode, data)
			}
			req, err := http.NewRequest(tt.method, f.baseURL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			direct, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			direct.Body.Close()
			if direct.StatusCode != tt.direct || direct.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("direct: got %d %s, want %d problem+json", direct.StatusCode, direct.Header.Get("Content-Type"), tt.direct)
			}
		})
	}
	// Still serving.
	if resp, data := f.api(t, http.MethodGet, "/api/status", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("after the refusals: got %d %s, want 200", resp.StatusCode, data)
	}
}

func TestReplay(t *testing.T) {
	f := setup(t)
	nv, err := f.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.vault.CreateKey("other", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A dead-letter blob: events with delivery metadata, both schemas.
	withDeadLetter := func(v any, lower bool) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(mustJSON(t, v), &m); err != nil {
			t.Fatal(err)
		}
		if lower {
			m["deadletterreason"], m["deliveryattempts"] = "MaxDeliveryAttemptsExceeded", 30
		} else {
			m["deadLetterReason"], m["deliveryAttempts"], m["lastDeliveryOutcome"] = "MaxDeliveryAttemptsExceeded", 30, "Probation"
		}
		return m
	}
	blob := mustJSON(t, []any{
		withDeadLetter(f.emu.KeyEvent(emulator.KeyNewVersionCreated, f.v2, "kv"), false),
		withDeadLetter(f.emu.KeyCloudEvent(emulator.KeyNewVersionCreated, nv, "kv"), true),
		withDeadLetter(f.emu.KeyEvent(emulator.KeyNewVersionCreated, other, "kv"), false),
	})

	resp, data := f.api(t, http.MethodPost, "/api/replay", string(blob))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s, want 200", resp.StatusCode, data)
	}
	var got handler.ReplayResponse
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Results) != 3 {
		t.Fatalf("got %d results, want 3", len(got.Results))
	}
	if got.Results[0].Report == nil || got.Results[1].Report == nil || got.Results[0].Report.TargetVersion != nv.Version {
		t.Errorf("got %+v, want both events of cmk reported with target %s", got.Results[:2], nv.Version)
	}
	if got.Results[2].Ignored != rotation.IgnoredNotSubscribed {
		t.Errorf("got ignored %q, want %q", got.Results[2].Ignored, rotation.IgnoredNotSubscribed)
	}
	if got := f.patches(); got != 3 {
		t.Errorf("got %d PATCHes, want 3: the events of one key share one rotation", got)
	}

	// One event, not an array.
	one := mustJSON(t, f.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv"))
	if resp, data := f.api(t, http.MethodPost, "/api/replay", string(one)); resp.StatusCode != http.StatusOK {
		t.Errorf("single event: got %d %s, want 200", resp.StatusCode, data)
	}
	if resp, _ := f.api(t, http.MethodPost, "/api/replay", `[]`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no events: got %d, want 400", resp.StatusCode)
	}
}

func TestStatusAPI(t *testing.T) {
	f := setup(t)
	resp, data := f.api(t, http.MethodGet, "/api/status", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s, want 200", resp.StatusCode, data)
	}
	var st handler.StatusResponse
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Credential == nil || !st.Credential.OK {
		t.Errorf("got credential %+v, want ok", st.Credential)
	}
	if len(st.Keys) != 1 || st.Keys[0].CurrentVersion != f.v2.Version {
		t.Fatalf("got %+v, want one key at %s", st.Keys, f.v2.Version)
	}
	states := map[string]string{}
	for _, s := range st.Keys[0].Servers {
		states[s.ID] = s.State
	}
	want := map[string]string{f.ids[0]: "lagging", f.ids[1]: "lagging", f.ids[2]: "lagging", f.follow: "versionless"}
	if diff := cmp.Diff(want, states); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
}

// TestJSONMode drives the HTTP functions the way a host with forwarding
// off does: the request in Data.req, the answer in Outputs.res. The
// client gets the status the API chose, refusals included; a failed
// invocation would reach it as 500.
func TestJSONMode(t *testing.T) {
	f := setup(t)
	app := *f.host.App()
	app.Forwarding = false
	host, err := fakehost.New(f.baseURL, &app, fakehost.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev := string(mustJSON(t, f.emu.KeyEvent(emulator.KeyNewVersionCreated, f.v2, "kv")))
	// A replay body near its 8 MiB limit: the envelope carries it as an
	// escaped string, beyond the 4 MiB of a trigger's envelope.
	padded := "[" + ev + strings.Repeat(" ", 7<<20) + "," + strings.Repeat(ev+",", 1000) + ev + "]"

	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantType                 string // problem type, when refused
		check                    func(t *testing.T, body []byte)
	}{
		{"dry run", http.MethodPost, "/api/rotate", `{"key":"` + f.key.String() + `","dryRun":true}`, http.StatusOK, "",
			func(t *testing.T, body []byte) {
				if rep := decodeReport(t, body); rep.TargetVersion != f.v2.Version || !rep.DryRun {
					t.Errorf("got %+v, want a dry run to %s", rep, f.v2.Version)
				}
			}},
		{"invalid body", http.MethodPost, "/api/rotate", `{"key":1}`, http.StatusBadRequest, "urn:cmkrotator:problem:invalid-body", nil},
		{"unknown key", http.MethodPost, "/api/rotate", `{"key":"https://` + f.key.Vault + `/keys/other"}`, http.StatusNotFound,
			"urn:cmkrotator:problem:unknown-key", nil},
		{"status", http.MethodGet, "/api/status", "", http.StatusOK, "", nil},
		{"replay near its limit", http.MethodPost, "/api/replay", padded, http.StatusOK, "",
			func(t *testing.T, body []byte) {
				var got handler.ReplayResponse
				if err := json.Unmarshal(body, &got); err != nil || len(got.Results) != 1002 {
					t.Errorf("got %d results, %v, want 1002", len(got.Results), err)
				}
			}},
		{"replay past its limit", http.MethodPost, "/api/replay", "[" + strings.Repeat(" ", 9<<20) + "]",
			http.StatusRequestEntityTooLarge, "urn:cmkrotator:problem:too-large", nil},
		{"envelope past its limit", http.MethodPost, "/api/replay", "[" + strings.Repeat(`"\"`, 6<<20) + "]",
			http.StatusRequestEntityTooLarge, "urn:cmkrotator:problem:too-large", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rd io.Reader
			if tt.body != "" {
				rd = strings.NewReader(tt.body)
			}
			req := httptest.NewRequest(tt.method, "http://localhost:7071"+tt.path, rd)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("x-functions-key", host.FunctionKey())
			resp, err := host.Do(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d %.300s, want %d", resp.StatusCode, body, tt.wantStatus)
			}
			ct := resp.Header.Get("Content-Type")
			if tt.wantType != "" {
				var p handler.Problem
				if err := json.Unmarshal(body, &p); err != nil || ct != "application/problem+json" ||
					p.Type != tt.wantType || p.Status != tt.wantStatus || p.Instance != tt.path {
					t.Errorf("got %s %+v (%v), want a %s problem for %s", ct, p, err, tt.wantType, tt.path)
				}
			} else if ct != "application/json" {
				t.Errorf("got content type %q, want application/json", ct)
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}

	// An envelope without Data.req is the host's fault, not the client's,
	// but still answered in Outputs.res: as an invocation failure the
	// host would turn it into 500 and drop the reason.
	res, err := host.Invoke(context.Background(), "Rotate", []byte(`{"Data":{},"Metadata":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded || res.Res == nil || res.Res.Status != http.StatusBadRequest ||
		res.Res.Headers.Get("Content-Type") != "application/problem+json" || !containsLine(res.Logs, `binding \"req\"`) {
		t.Errorf("got %+v, want a successful invocation whose output is a 400 problem naming the binding", res)
	}
}

func decodeReport(t *testing.T, data []byte) rotation.Report {
	t.Helper()
	var rep rotation.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("decode report %s: %v", data, err)
	}
	return rep
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// undecodable returns ev, an event as JSON, whose data.Id names a secret,
// not a key.
func undecodable(t *testing.T, ev any) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(mustJSON(t, ev), &m); err != nil {
		t.Fatal(err)
	}
	m["id"] = "bad-" + m["id"].(string)
	m["data"].(map[string]any)["Id"] = "https://kv.vault.azure.net/secrets/cmk/0123456789abcdef0123456789abcdef"
	return m
}

// TestReplayUndecodableEvent replays a batch in which one event cannot be
// decoded: the good ones are processed and the bad one is reported at its
// index, final, instead of failing the whole batch.
func TestReplayUndecodableEvent(t *testing.T) {
	f := setup(t)
	nv, err := f.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	good := f.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv")
	bad := undecodable(t, good)

	resp, data := f.api(t, http.MethodPost, "/api/replay", string(mustJSON(t, []any{good, bad})))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s, want 200", resp.StatusCode, data)
	}
	var got handler.ReplayResponse
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Results) != 2 {
		t.Fatalf("got %d results, want 2", len(got.Results))
	}
	if rep := got.Results[0].Report; rep == nil || rep.TargetVersion != nv.Version || !rep.OK() {
		t.Errorf("event 0: got %+v, want a successful rotation to %s", got.Results[0], nv.Version)
	}
	if r := got.Results[1]; r.EventID != bad["id"] || r.Report != nil || !strings.HasPrefix(r.Ignored, "undecodable: ") ||
		!strings.Contains(r.Ignored, "secrets") {
		t.Errorf("event 1: got %+v, want id %s ignored as undecodable, naming the secret Id", r, bad["id"])
	}
	for _, id := range f.ids {
		if got := f.keyURL(t, id); got != nv.KID {
			t.Errorf("server %s: got %s, want %s", id, got, nv.KID)
		}
	}

	// Nothing decodable: the request is refused, naming each event.
	resp, data = f.api(t, http.MethodPost, "/api/replay", string(mustJSON(t, []any{bad, bad})))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(data), "event 1") {
		t.Errorf("only bad events: got %d %s, want 400 naming event 1", resp.StatusCode, data)
	}
	// A body that is not JSON stays a problem.
	resp, data = f.api(t, http.MethodPost, "/api/replay", `[{"id":`)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("malformed body: got %d %s, want 400 problem+json", resp.StatusCode, data)
	}
}

// TestTriggerUndecodableEvent delivers an array in Data.event with one
// undecodable event: the good event is rotated and decides the answer,
// and the bad one is dropped with an error in the logs.
func TestTriggerUndecodableEvent(t *testing.T) {
	tests := []struct {
		name   string
		fault  bool // Resource Manager unavailable
		wantOK bool
	}{
		{"good event rotates", false, true},
		{"good event retryable", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			nv, err := f.vault.RotateKey("cmk")
			if err != nil {
				t.Fatal(err)
			}
			if tt.fault {
				f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: 503})
			}
			good := f.emu.KeyEvent(emulator.KeyNewVersionCreated, nv, "kv")
			bad := undecodable(t, good)
			env := `{"Data":{"event":` + string(mustJSON(t, []any{good, bad})) + `},"Metadata":{"sys":{"MethodName":"KeyNewVersionCreated"}}}`

			res, err := f.host.Invoke(context.Background(), "KeyNewVersionCreated", []byte(env))
			if err != nil {
				t.Fatal(err)
			}
			if res.Succeeded != tt.wantOK {
				t.Errorf("got succeeded %t (status %d), want %t", res.Succeeded, res.Status, tt.wantOK)
			}
			// The host keeps Logs of successful invocations only; the
			// process log has every line.
			if tt.wantOK && !containsLine(res.Logs, "event dropped: undecodable") {
				t.Errorf("got Logs %q, want a line dropping event %s", res.Logs, bad["id"])
			}
			var dropped bool
			for _, l := range f.logs.lines(t) {
				if l["invocation_id"] == res.InvocationID && l["level"] == "ERROR" &&
					l["msg"] == "event dropped: undecodable" && l["event_id"] == bad["id"] {
					dropped = true
				}
			}
			if !dropped {
				t.Errorf("got no process log error dropping event %s, want one", bad["id"])
			}
			if got, want := f.patches(), len(f.ids); got < want {
				t.Errorf("got %d PATCHes, want at least %d: the good event must be processed", got, want)
			}
		})
	}
}

// TestAPIErrorDetails checks that refusals of malformed input explain
// themselves in JSON terms, never in Go's, and that a body that is JSON
// but not the request's shape is not called malformed.
func TestAPIErrorDetails(t *testing.T) {
	f := setup(t)
	key := f.key.String()
	const malformed, invalid = "Malformed JSON", "Invalid request body"
	tests := []struct {
		name, path, body, wantTitle, wantDetail string
	}{
		{"string for a boolean", "", `{"key":"` + key + `","dryRun":"yes"}`, invalid, "field dryRun: want a boolean, got a string"},
		{"number for a string", "", `{"key":42}`, invalid, "field key: want a string, got a number"},
		{"object for a boolean", "", `{"key":"` + key + `","allowOlder":{}}`, invalid, "field allowOlder: want a boolean, got an object"},
		{"array for the body", "", `["` + key + `"]`, invalid, "the body: want an object, got an array"},
		{"null for the body", "", `null`, invalid, "the body: want an object, got null"},
		{"null with spaces", "", " null\n", invalid, "the body: want an object, got null"},
		{"string for the body", "", `"` + key + `"`, invalid, "the body: want an object, got a string"},
		{"unknown field", "", `{"key":"` + key + `","bogus":1}`, invalid, `unknown field "bogus"; want only key, dryRun, allowOlder`},
		{"key given twice", "", `{"key":"a","key":"` + key + `"}`, invalid, "field key given twice"},
		{"flag given twice", "", `{"key":"` + key + `","dryRun":true,"dryRun":false}`, invalid, "field dryRun given twice"},
		{"syntax error", "", `{"key" "` + key + `"}`, malformed, "malformed JSON at byte 8: invalid character '\"' after object key"},
		{"truncated", "", `{"key":`, malformed, "malformed JSON at byte 7: the body ends early"},
		{"truncated after an unknown field", "", `{"bogus":1,`, malformed, "malformed JSON at byte 11: the body ends early"},
		{"trailing data", "", `{"key":"` + key + `","bogus":1} {}`, malformed, "malformed JSON: unexpected data after the JSON value"},
		{"replay of a string", "/api/replay", `"event"`, invalid, "decode events: want a JSON object or an array of them, got a string"},
		{"replay truncated", "/api/replay", `[{"id":`, malformed, "malformed JSON at byte 7: the body ends early"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if path == "" {
				path = "/api/rotate"
			}
			resp, data := f.api(t, http.MethodPost, path, tt.body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("got %d %s, want 400", resp.StatusCode, data)
			}
			var p handler.Problem
			if err := json.Unmarshal(data, &p); err != nil {
				t.Fatal(err)
			}
			if p.Title != tt.wantTitle || p.Detail != tt.wantDetail {
				t.Errorf("got title %q detail %q, want %q and %q", p.Title, p.Detail, tt.wantTitle, tt.wantDetail)
			}
			for _, word := range []string{"Go struct", "RotateRequest", "json:", "of type"} {
				if strings.Contains(p.Detail, word) {
					t.Errorf("got detail %q, want no %q", p.Detail, word)
				}
			}
		})
	}
	if got := f.patches(); got != 0 {
		t.Errorf("got %d PATCHes, want none", got)
	}
}

// TestAPIContentType sends bodies declared as other media types to the
// routes that read one: each is refused 415 before the body is read,
// naming what was sent and what is wanted. JSON with parameters, +json
// types and a body with no Content-Type at all (curl without -H) are
// read.
func TestAPIContentType(t *testing.T) {
	f := setup(t)
	rotate := `{"key":"` + f.key.String() + `","dryRun":true}`
	tests := []struct {
		name, contentType string
		want              string // in the detail; empty: accepted
	}{
		{"form", "application/x-www-form-urlencoded", "not application/x-www-form-urlencoded"},
		{"text", "text/plain; charset=utf-8", "not text/plain"},
		{"multipart", "multipart/form-data; boundary=x", "not multipart/form-data"},
		{"no subtype", "json", "not json"},
		{"unparsable", "application/json x", `not "application/json x"`},
		{"none", "", ""},
		{"JSON", "application/json", ""},
		{"JSON with charset", "application/json; charset=utf-8", ""},
		{"JSON in capitals", "Application/JSON", ""},
		{"a +json type", "application/cloudevents-batch+json", ""},
	}
	for _, path := range []string{"/api/rotate", "/api/replay"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				body, accepted := rotate, http.StatusOK
				if path == "/api/replay" {
					body, accepted = `[]`, http.StatusBadRequest // read, and found empty
				}
				f.emu.ResetRequests()
				resp, data := f.apiAs(t, http.MethodPost, path, tt.contentType, body)
				if tt.want == "" {
					if resp.StatusCode != accepted {
						t.Errorf("got %d %s, want %d", resp.StatusCode, data, accepted)
					}
					return
				}

				if resp.StatusCode != http.StatusUnsupportedMediaType {
					t.Fatalf("got %d %s, want 415", resp.StatusCode, data)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("got content type %q, want application/problem+json", ct)
				}
				var p handler.Problem
				if err := json.Unmarshal(data, &p); err != nil {
					t.Fatal(err)
				}
				if p.Type != "urn:cmkrotator:problem:unsupported-media-type" || p.Status != http.StatusUnsupportedMediaType ||
					!strings.Contains(p.Detail, "takes application/json") || !strings.Contains(p.Detail, tt.want) {
					t.Errorf("got %+v, want an unsupported-media-type problem naming application/json and %s", p, tt.want)
				}
				if n := len(f.emu.Requests()); n != 0 {
					t.Errorf("got %d calls to Azure, want none", n)
				}
			})
		}
	}
}

// TestFunctionRouteMethods calls the routes the host invokes with other
// methods than it uses: each exists, so the answer is 405 with Allow, not
// 404, and nothing runs.
func TestFunctionRouteMethods(t *testing.T) {
	f := setup(t)
	tests := []struct{ method, path, allow string }{
		{http.MethodGet, "/KeyNewVersionCreated", "POST"},
		{http.MethodPut, "/KeyNewVersionCreated", "POST"},
		{http.MethodGet, "/Reconcile", "POST"},
		{http.MethodGet, "/Rotate", "POST"},
		{http.MethodGet, "/Replay", "POST"},
		{http.MethodGet, "/Status", "POST"},
		{http.MethodPost, "/", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			f.emu.ResetRequests()
			req, err := http.NewRequest(tt.method, f.baseURL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p handler.Problem
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.allow {
				t.Errorf("got %d Allow %q, want 405 Allow %q", resp.StatusCode, resp.Header.Get("Allow"), tt.allow)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" ||
				p.Type != "urn:cmkrotator:problem:method-not-allowed" || !strings.Contains(p.Detail, tt.allow) {
				t.Errorf("got %s %+v, want a method-not-allowed problem naming %s", ct, p, tt.allow)
			}
			if n := len(f.emu.Requests()); n != 0 {
				t.Errorf("got %d calls to Azure, want none", n)
			}
		})
	}

	resp, err := http.Get(f.baseURL + "/Nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown route: got %d, want 404", resp.StatusCode)
	}
}
