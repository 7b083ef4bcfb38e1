package fakehost_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/internal/fakehost"
)

// recorder is a handler that keeps what the host sent and answers as told.
type recorder struct {
	mu     sync.Mutex
	reqs   []*http.Request
	bodies [][]byte

	status      int
	contentType string
	body        string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, r)
	rec.bodies = append(rec.bodies, body)
	rec.mu.Unlock()
	if rec.contentType != "" {
		w.Header().Set("Content-Type", rec.contentType)
	}
	w.WriteHeader(rec.status)
	io.WriteString(w, rec.body)
}

func (rec *recorder) last() (*http.Request, []byte) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		return nil, nil
	}
	return rec.reqs[len(rec.reqs)-1], rec.bodies[len(rec.bodies)-1]
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

const testHost = `{"version": "2.0",
  "customHandler": {"description": {"defaultExecutablePath": "handler"}, "enableForwardingHttpRequest": %t}}`

// testFunctions are the functions of the apps these tests play.
var testFunctions = map[string]string{
	"KeyNewVersionCreated": `{"bindings":[{"type":"eventGridTrigger","name":"event","direction":"in"}]}`,
	"Reconcile":            `{"bindings":[{"type":"timerTrigger","name":"timer","direction":"in","schedule":"0 */5 * * * *"}]}`,
	"Rotate": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","methods":["post"],"route":"rotate"},
	                        {"type":"http","direction":"out","name":"res"}]}`,
	"Orders": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"function","methods":["post"],"route":"orders/{id}"},
	                        {"type":"http","direction":"out","name":"res"}]}`,
	"Open": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"anonymous"},
	                      {"type":"http","direction":"out","name":"$return"}]}`,
	"Queue": `{"bindings":[{"type":"timerTrigger","name":"tick","direction":"in","schedule":"0 0 * * * *"},
	                       {"type":"http","direction":"out","name":"res"},
	                       {"type":"queue","direction":"out","name":"msg"},
	                       {"type":"blob","direction":"out","name":"raw","dataType":"binary"},
	                       {"type":"queue","direction":"out","name":"$return"}]}`,
}

func testApp(t *testing.T, forwarding bool) *fakehost.App {
	t.Helper()
	files := map[string][]byte{}
	for name, f := range testFunctions {
		files[name] = []byte(f)
	}
	app, err := fakehost.ParseApp([]byte(fmt.Sprintf(testHost, forwarding)), files)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func start(t *testing.T, rec *recorder, forwarding bool, opts fakehost.Options) *fakehost.Host {
	t.Helper()
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	h, err := fakehost.New(srv.URL, testApp(t, forwarding), opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// sysValues matches the parts of Metadata.sys that change per call.
var sysValues = regexp.MustCompile(`"UtcNow":"[^"]+","RandGuid":"[0-9a-f-]{36}"`)

const maskedSys = `"UtcNow":"…","RandGuid":"…"`

// masked returns body with UtcNow and RandGuid masked, failing the test
// when they are missing or malformed.
func masked(t *testing.T, body []byte) string {
	t.Helper()
	if n := len(sysValues.FindAll(body, -1)); n != 1 {
		t.Errorf("got %d sys UtcNow/RandGuid pairs in\n%s\nwant 1", n, body)
	}
	return sysValues.ReplaceAllString(string(body), maskedSys)
}

const event = `{
  "id": "00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
  "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
  "subject": "fluid-cmk",
  "eventType": "Microsoft.KeyVault.KeyNewVersionCreated",
  "eventTime": "2019-07-25T01:08:33.1036730Z",
  "data": {"Id": "https://kv.vault.azure.net/keys/fluid-cmk/abc", "VaultName": "kv",
           "ObjectType": "Key", "ObjectName": "fluid-cmk", "Version": "abc", "NBF": 1559081980, "EXP": null},
  "dataVersion": "1", "metadataVersion": "1"
}`

const cloudEvent = `{
  "specversion": "1.0", "type": "Microsoft.KeyVault.KeyNewVersionCreated",
  "source": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
  "id": "9d1b7c3e-0c55-4a57-9a0e-3b5bd1f0a001", "time": "2024-05-01T12:00:00.1200000+02:00", "subject": "fluid-cmk",
  "datacontenttype": "application/json",
  "data": {"Id": "https://kv.vault.azure.net/keys/fluid-cmk/abc", "VaultName": "kv", "ObjectType": "Key",
           "ObjectName": "fluid-cmk", "Version": "abc", "NBF": null, "EXP": null}
}`

// TestEventGridRequestShape compares the whole envelope, byte for byte
// but for sys's UtcNow and RandGuid, for both schemas, the event as an
// object and as a string, and a CloudEvent whose data is a string or
// base64.
func TestEventGridRequestShape(t *testing.T) {
	rec := &recorder{status: 200, contentType: "application/json", body: `{"Outputs":{},"Logs":["done"],"ReturnValue":null}`}
	h := start(t, rec, true, fakehost.Options{})

	const egData = `{"Id":"https://kv.vault.azure.net/keys/fluid-cmk/abc","VaultName":"kv","ObjectType":"Key","ObjectName":"fluid-cmk","Version":"abc","NBF":1559081980,"EXP":null}`
	const egCompact = `{"id":"00eccf70-95a7-4e7c-8299-2eb17ee9ad64","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv","subject":"fluid-cmk","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","eventTime":"2019-07-25T01:08:33.103673Z","data":` + egData + `,"dataVersion":"1","metadataVersion":"1"}`
	const ceData = `{"Id":"https://kv.vault.azure.net/keys/fluid-cmk/abc","VaultName":"kv","ObjectType":"Key","ObjectName":"fluid-cmk","Version":"abc","NBF":null,"EXP":null}`
	// The offset is turned into UTC and the trailing zeros dropped.
	const ceHead = `{"specversion":"1.0","type":"Microsoft.KeyVault.KeyNewVersionCreated","source":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv","id":"9d1b7c3e-0c55-4a57-9a0e-3b5bd1f0a001","time":"2024-05-01T10:00:00.12Z","subject":"fluid-cmk","datacontenttype":"application/json"`
	sysPart := `"sys":{"MethodName":"KeyNewVersionCreated",` + maskedSys + `}`
	str := func(s string) string { b, _ := json.Marshal(s); return string(b) }

	tests := []struct {
		name     string
		event    string
		asString bool
		want     string
	}{
		{"Event Grid", event, false,
			`{"Data":{"event":` + egCompact + `},"Metadata":{"data":` + egData + `,` + sysPart + `}}`},
		{"Event Grid as a string", event, true,
			`{"Data":{"event":` + str(egCompact) + `},"Metadata":{"data":` + egData + `,` + sysPart + `}}`},
		{"CloudEvents", cloudEvent, false,
			`{"Data":{"event":` + ceHead + `,"data":` + ceData + `}},"Metadata":{"data":` + ceData + `,` + sysPart + `}}`},
		{"CloudEvents with string data", strings.Replace(cloudEvent, `"data": {`, `"data": "text", "x": {`, 1), false,
			`{"Data":{"event":` + ceHead + `,"data":"text","x":` + ceData + `}},"Metadata":{"data":"\"text\"",` + sysPart + `}}`},
		{"CloudEvents with base64 data", strings.Replace(cloudEvent, `"data": {`, `"data_base64": "AAE=", "x": {`, 1), false,
			`{"Data":{"event":` + ceHead + `,"data_base64":"AAE=","x":` + ceData + `}},"Metadata":{` + sysPart + `}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.EventGrid(context.Background(), "KeyNewVersionCreated", []byte(tt.event), fakehost.EventOptions{AsString: tt.asString})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Succeeded {
				t.Fatalf("got failure %q, want success", res.Failure)
			}
			req, body := rec.last()

			if got, want := req.Method+" "+req.URL.Path, "POST /KeyNewVersionCreated"; got != want {
				t.Errorf("got %s, want %s", got, want)
			}
			if got := req.TransferEncoding; len(got) != 1 || got[0] != "chunked" {
				t.Errorf("got transfer encoding %v, want chunked", got)
			}
			for name, want := range map[string]string{
				"Content-Type":                   "application/json; charset=utf-8",
				"X-Azure-Functions-HostVersion":  fakehost.DefaultVersion,
				"User-Agent":                     "Azure-Functions-Host/" + fakehost.DefaultVersion,
				"X-Azure-Functions-InvocationId": res.InvocationID,
			} {
				if got := req.Header.Get(name); got != want {
					t.Errorf("header %s: got %q, want %q", name, got, want)
				}
			}
			if got := masked(t, body); got != tt.want {
				t.Errorf("got body\n%s\nwant\n%s", got, tt.want)
			}
			if diff := cmp.Diff([]string{"done"}, res.Logs); diff != "" {
				t.Errorf("logs (-want +got):\n%s", diff)
			}
			if got, want := res.EventGridStatus(), http.StatusAccepted; got != want {
				t.Errorf("got Event Grid status %d, want %d", got, want)
			}
		})
	}
}

// TestTriggerBindingNames: the envelope names the trigger as
// function.json does, and a function without the trigger asked for, or
// not in the app, is refused.
func TestTriggerBindingNames(t *testing.T) {
	rec := &recorder{status: 200, contentType: "application/json", body: `{}`}
	h := start(t, rec, true, fakehost.Options{})

	if _, err := h.Timer(context.Background(), "Queue", fakehost.TimerOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, body := rec.last(); !strings.HasPrefix(string(body), `{"Data":{"tick":{"Schedule":`) {
		t.Errorf("got %s, want Data.tick, the trigger's name in function.json", body)
	}
	for _, call := range []func() error{
		func() error {
			_, err := h.Timer(context.Background(), "KeyNewVersionCreated", fakehost.TimerOptions{})
			return err
		},
		func() error {
			_, err := h.EventGrid(context.Background(), "Reconcile", []byte(event), fakehost.EventOptions{})
			return err
		},
		func() error { _, err := h.Invoke(context.Background(), "Nothing", []byte(`{}`)); return err },
	} {
		n := rec.count()
		if err := call(); err == nil {
			t.Error("got no error, want the function refused")
		}
		if rec.count() != n {
			t.Error("got a call to the handler, want none")
		}
	}
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		wantOK      bool
		wantHung    bool
		wantFailure string
	}{
		{"ok", 200, "application/json", `{"Outputs":{},"Logs":[],"ReturnValue":null}`, true, false, ""},
		{"text json", 200, "text/json", `{}`, true, false, ""},
		{"case-insensitive names", 200, "application/json; charset=utf-8", `{"outputs":{},"logs":["a"]}`, true, false, ""},
		{"500", 500, "application/json", `{"Outputs":{},"Logs":[]}`, false, false, "Response status code does not indicate success: 500 (Internal Server Error)."},
		{"text/plain", 200, "text/plain", `{"Outputs":{}}`, false, false, "No MediaTypeFormatter"},
		{"not json", 200, "application/json", `hello`, false, false, "Invalid HttpResponseMessage"},
		{"empty", 200, "application/json", ``, false, true, "never completes"},
		{"null", 200, "application/json", `null`, false, true, "never completes"},
		{"res string", 200, "application/json", `{"Outputs":{"res":"hi"}}`, false, false, "httpOutputBindingResponse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: tt.status, contentType: tt.contentType, body: tt.body}
			h := start(t, rec, true, fakehost.Options{})
			res, err := h.Timer(context.Background(), "Queue", fakehost.TimerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Succeeded != tt.wantOK || res.Hung != tt.wantHung {
				t.Errorf("got succeeded %t hung %t (%q), want %t %t", res.Succeeded, res.Hung, res.Failure, tt.wantOK, tt.wantHung)
			}
			if !strings.Contains(res.Failure, tt.wantFailure) {
				t.Errorf("got failure %q, want it to contain %q", res.Failure, tt.wantFailure)
			}
			if !res.Succeeded && res.Logs != nil {
				t.Errorf("got logs %q on a failure, want none", res.Logs)
			}
		})
	}
}

func TestHTTPOutput(t *testing.T) {
	rec := &recorder{status: 200, contentType: "application/json",
		body: `{"Outputs":{"res":{"statusCode":"404","headers":{"X-A":"b"},"body":"gone"}},"Logs":[],"ReturnValue":null}`}
	h := start(t, rec, true, fakehost.Options{})
	res, err := h.Timer(context.Background(), "Queue", fakehost.TimerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Res == nil {
		t.Fatalf("got no res, want one (failure %q)", res.Failure)
	}
	if res.Res.Status != 404 || string(res.Res.Body) != "gone" || res.Res.Headers.Get("X-A") != "b" {
		t.Errorf("got %d %q %v, want 404 \"gone\" X-A: b", res.Res.Status, res.Res.Body, res.Res.Headers)
	}
	if got, want := res.Res.Headers.Get("Content-Type"), "text/plain; charset=utf-8"; got != want {
		t.Errorf("got content type %q, want %q", got, want)
	}
}

// TestBoundOutputs: outputs and ReturnValue that are valid base64 reach
// their bindings as bytes unless the binding is dataType binary; other
// values pass through, and keys that name no binding are dropped.
func TestBoundOutputs(t *testing.T) {
	rec := &recorder{status: 200, contentType: "application/json",
		body: `{"Outputs":{"msg":"SGVsbG8=","raw":"SGVsbG8=","other":"x"},"Logs":[],"ReturnValue":{"n":1}}`}
	h := start(t, rec, true, fakehost.Options{})
	res, err := h.Timer(context.Background(), "Queue", fakehost.TimerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"msg": []byte("Hello"), "raw": "SGVsbG8=", "$return": map[string]any{"n": 1.0}}
	if diff := cmp.Diff(want, res.Bound); diff != "" {
		t.Errorf("bound outputs (-want +got):\n%s", diff)
	}

	rec.body = `{"Outputs":{"msg":"not base64!"},"ReturnValue":"test"}`
	if res, err = h.Timer(context.Background(), "Queue", fakehost.TimerOptions{}); err != nil {
		t.Fatal(err)
	}
	want = map[string]any{"msg": "not base64!", "$return": []byte{0xb5, 0xeb, 0x2d}}
	if diff := cmp.Diff(want, res.Bound); diff != "" {
		t.Errorf("bound outputs (-want +got):\n%s", diff)
	}
}

// TestRouting: the host answers for routes and methods function.json
// does not declare, and for calls without the function key, without
// calling the handler; the key may come as ?code= or x-functions-key.
// do sends req to h's public endpoint and returns the answer, its body
// read and closed.
func do(t *testing.T, h *fakehost.Host, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := h.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestRouting(t *testing.T) {
	rec := &recorder{status: 200, contentType: "application/json", body: `{"ok":true}`}
	h := start(t, rec, true, fakehost.Options{FunctionKey: "k1"})
	tests := []struct {
		name, method, url string
		key               string // x-functions-key
		want              int
		reaches           bool
	}{
		{"declared", http.MethodPost, "/api/rotate?code=k1", "", 200, true},
		{"key in the header", http.MethodPost, "/api/rotate", "k1", 200, true},
		{"route case-insensitive", http.MethodPost, "/API/Rotate", "k1", 200, true},
		{"route parameter", http.MethodPost, "/api/orders/42", "k1", 200, true},
		{"no key", http.MethodPost, "/api/rotate", "", 401, false},
		{"wrong key", http.MethodPost, "/api/rotate?code=k2", "k3", 401, false},
		{"wrong method", http.MethodGet, "/api/rotate?code=k1", "", 404, false},
		{"undeclared route", http.MethodPost, "/api/rotation?code=k1", "", 404, false},
		{"no prefix", http.MethodPost, "/rotate?code=k1", "", 404, false},
		{"missing route parameter", http.MethodPost, "/api/orders?code=k1", "", 404, false},
		{"anonymous, default route, any method", http.MethodDelete, "/api/Open", "", 200, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := rec.count()
			req := httptest.NewRequest(tt.method, "http://localhost:7071"+tt.url, nil)
			if tt.key != "" {
				req.Header.Set("x-functions-key", tt.key)
			}
			resp, body := do(t, h, req)
			if resp.StatusCode != tt.want {
				t.Errorf("got %d %s, want %d", resp.StatusCode, body, tt.want)
			}
			if reached := rec.count() > n; reached != tt.reaches {
				t.Errorf("got handler called %t, want %t", reached, tt.reaches)
			}
			if !tt.reaches && len(body) != 0 {
				t.Errorf("got body %q from the host, want none", body)
			}
		})
	}
}

func TestForward(t *testing.T) {
	rec := &recorder{status: 418, contentType: "application/problem+json", body: `{"title":"teapot"}`}
	h := start(t, rec, true, fakehost.Options{FunctionKey: "k1", Version: "4.1040.0.0"})

	req := httptest.NewRequest(http.MethodPost, "https://cmk.azurewebsites.net/api/rotate?code=k1&x=1&x=2", strings.NewReader(`{"a":1}`))
	req.Header.Set("User-Agent", "curl/8.5.0")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-functions-key", "k1")
	resp, body := do(t, h, req)
	if resp.StatusCode != 418 || string(body) != `{"title":"teapot"}` || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("got %d %s %s, want the handler's answer passed through", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	got, gotBody := rec.last()
	if got.Method != http.MethodPost || got.URL.Path != "/api/rotate" || got.URL.RawQuery != "code=k1&x=1%2C2" {
		t.Errorf("got %s %s?%s, want POST /api/rotate?code=k1&x=1%%2C2", got.Method, got.URL.Path, got.URL.RawQuery)
	}
	if string(gotBody) != `{"a":1}` || got.ContentLength != 7 {
		t.Errorf("got body %q (length %d), want the client's with its length", gotBody, got.ContentLength)
	}
	if got.Host != "cmk.azurewebsites.net" {
		t.Errorf("got Host %q, want the public one", got.Host)
	}
	for name, want := range map[string]string{
		"User-Agent":                    "curl/8.5.0 Azure-Functions-Host/4.1040.0.0",
		"X-Azure-Functions-HostVersion": "4.1040.0.0",
		"Content-Type":                  "application/json",
		"X-Functions-Key":               "k1",
	} {
		if got := got.Header.Get(name); got != want {
			t.Errorf("header %s: got %q, want %q", name, got, want)
		}
	}
	if id := got.Header.Get("X-Azure-Functions-InvocationId"); !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(id) {
		t.Errorf("got invocation id %q, want a GUID", id)
	}
}

// TestHTTPRequestShape compares the whole JSON-mode envelope of an HTTP
// call, but for sys's UtcNow and RandGuid: Url with the scheme it came
// with, headers as arrays with Host and Content-Length, route parameters,
// and Metadata's double-encoded strings.
func TestHTTPRequestShape(t *testing.T) {
	rec := &recorder{status: 200, contentType: "application/json", body: `{"Outputs":{"res":{"statusCode":"201","body":"made"}},"Logs":[]}`}
	h := start(t, rec, false, fakehost.Options{FunctionKey: "k1"})

	req := httptest.NewRequest(http.MethodPost, "https://localhost:7071/api/orders/42?verbose=true&code=k1",
		strings.NewReader(`{"sku":"abc","quantity":2,"tags":["a"],"box":{"w":1}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "curl/8.5.0")
	resp, body := do(t, h, req)
	if resp.StatusCode != 201 || string(body) != "made" {
		t.Errorf("got %d %q, want the http output: 201 made", resp.StatusCode, body)
	}

	got, env := rec.last()
	if got.URL.Path != "/Orders" {
		t.Errorf("got path %s, want /Orders", got.URL.Path)
	}
	const identities = `[{"AuthenticationType":"WebJobsAuthLevel","IsAuthenticated":true,"Actor":null,"BootstrapContext":null,"Label":null,"Name":null,"Claims":[{"Issuer":"LOCAL AUTHORITY","OriginalIssuer":"LOCAL AUTHORITY","Properties":{},"Type":"http://schemas.microsoft.com/2017/07/functions/claims/authlevel","Value":"Function","ValueType":"http://www.w3.org/2001/XMLSchema#string"}],"NameClaimType":"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name","RoleClaimType":"http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}]`
	want := `{"Data":{"req":{"Url":"https://localhost:7071/api/orders/42?verbose=true\u0026code=k1","Method":"POST",` +
		`"Query":{"code":"k1","verbose":"true"},` +
		`"Headers":{"Content-Length":["53"],"Content-Type":["application/json"],"Host":["localhost:7071"],"User-Agent":["curl/8.5.0"]},` +
		`"Params":{"id":"42"},"Identities":` + identities + `,` +
		`"Body":"{\"sku\":\"abc\",\"quantity\":2,\"tags\":[\"a\"],\"box\":{\"w\":1}}"}},` +
		`"Metadata":{"box":{"w":1},"quantity":"\"2\"","sku":"\"abc\"","verbose":"\"true\"","id":"\"42\"",` +
		`"Query":{"code":"k1","verbose":"true"},` +
		`"Headers":{"Content-Length":"53","Content-Type":"application/json","Host":"localhost:7071","User-Agent":"curl/8.5.0"},` +
		`"sys":{"MethodName":"Orders",` + maskedSys + `}}}`
	if got := masked(t, env); got != want {
		t.Errorf("got envelope\n%s\nwant\n%s", got, want)
	}

	// Bytes the host does not read as text arrive as base64; plain http
	// is named as such.
	req = httptest.NewRequest(http.MethodPost, "http://localhost:7071/api/orders/7", strings.NewReader("\x00\x01"))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("x-functions-key", "k1")
	if _, err := h.Do(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	_, env = rec.last()
	var e struct {
		Data struct {
			Req struct{ Url, Body string }
		}
	}
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	if e.Data.Req.Body != "AAE=" || e.Data.Req.Url != "http://localhost:7071/api/orders/7" {
		t.Errorf("got Url %q Body %q, want http://localhost:7071/api/orders/7 and AAE=", e.Data.Req.Url, e.Data.Req.Body)
	}
}

// TestJSONModeAnswers: what the client gets from an HTTP function the
// host does not forward.
func TestJSONModeAnswers(t *testing.T) {
	tests := []struct {
		name, function, answer string
		status                 int
		wantStatus             int
		wantBody               string
	}{
		{"http output", "/api/rotate", `{"Outputs":{"res":{"statusCode":400,"headers":{"Content-Type":"application/problem+json"},"body":"{}"}}}`, 200, 400, "{}"},
		{"no http output", "/api/rotate", `{"Outputs":{},"Logs":[]}`, 200, 200, "{}"},
		{"failed invocation", "/api/rotate", `{"Outputs":{"res":{"statusCode":"400"}}}`, 400, 500, ""},
		{"$return string", "/api/Open", `{"ReturnValue":"hello"}`, 200, 200, "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{status: tt.status, contentType: "application/json", body: tt.answer}
			h := start(t, rec, false, fakehost.Options{})
			req := httptest.NewRequest(http.MethodPost, "http://localhost:7071"+tt.function+"?code="+h.FunctionKey(), nil)
			resp, body := do(t, h, req)
			if resp.StatusCode != tt.wantStatus || string(body) != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// TestLoadApp reads the repository's app, as the host would.
func TestLoadApp(t *testing.T) {
	app, err := fakehost.LoadApp("../..")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("../..")
	http := func(route, method string) []fakehost.Binding {
		return []fakehost.Binding{
			{Type: "httpTrigger", Direction: "in", Name: "req", AuthLevel: "function", Methods: []string{method}, Route: route},
			{Type: "http", Direction: "out", Name: "res"},
		}
	}
	want := &fakehost.App{
		Root:        root,
		Handler:     fakehost.Description{DefaultExecutablePath: "cmkrotator", Arguments: []string{"serve"}},
		Forwarding:  true,
		RoutePrefix: "api",
		Functions: map[string]fakehost.Function{
			"KeyNewVersionCreated": {Name: "KeyNewVersionCreated", Bindings: []fakehost.Binding{{Type: "eventGridTrigger", Direction: "in", Name: "event"}}},
			"Reconcile": {Name: "Reconcile", Bindings: []fakehost.Binding{
				{Type: "timerTrigger", Direction: "in", Name: "timer", Schedule: "%ROTATION_RECONCILE_SCHEDULE%"}}},
			"Replay": {Name: "Replay", Bindings: http("replay", "post")},
			"Rotate": {Name: "Rotate", Bindings: http("rotate", "post")},
			"Status": {Name: "Status", Bindings: http("status", "get")},
		},
	}
	if diff := cmp.Diff(want, app); diff != "" {
		t.Errorf("app (-want +got):\n%s", diff)
	}
}

// TestParseAppRefuses what the host refuses at start.
func TestParseAppRefuses(t *testing.T) {
	good := `{"bindings":[{"type":"eventGridTrigger","name":"event","direction":"in"}]}`
	tests := []struct {
		name, host, function, want string
	}{
		{"no version", `{"customHandler":{"description":{"defaultExecutablePath":"h"}}}`, good, "version"},
		{"no custom handler", `{"version":"2.0"}`, good, "customHandler"},
		{"no executable", `{"version":"2.0","customHandler":{"description":{}}}`, good, "defaultExecutablePath"},
		{"no trigger", fmt.Sprintf(testHost, true), `{"bindings":[{"type":"http","name":"res","direction":"out"}]}`, "exactly one trigger"},
		{"two triggers", fmt.Sprintf(testHost, true), `{"bindings":[{"type":"eventGridTrigger","name":"a"},{"type":"timerTrigger","name":"b","schedule":"x"}]}`, "exactly one trigger"},
		{"unknown auth level", fmt.Sprintf(testHost, true), `{"bindings":[{"type":"httpTrigger","name":"req","authLevel":"user"}]}`, "authLevel"},
		{"timer without schedule", fmt.Sprintf(testHost, true), `{"bindings":[{"type":"timerTrigger","name":"t"}]}`, "schedule"},
		{"a trigger not played", fmt.Sprintf(testHost, true), `{"bindings":[{"type":"queueTrigger","name":"q"}]}`, "queueTrigger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fakehost.ParseApp([]byte(tt.host), map[string][]byte{"F": []byte(tt.function)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// helperEnv marks the test binary started as a handler by TestStart.
const helperEnv = "FAKEHOST_TEST_HANDLER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		serveHelper()
		return
	}
	os.Exit(m.Run())
}

// serveHelper is a handler that answers GET / with what it was started
// with, and every invocation with an empty result.
func serveHelper() {
	wd, _ := os.Getwd()
	started, _ := json.Marshal(map[string]any{"args": os.Args[1:], "dir": wd, "env": os.Environ()})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { w.Write(started) })
	mux.HandleFunc("POST /", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"Outputs":{},"Logs":[],"ReturnValue":null}`)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT"), mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// TestStart starts a handler as host.json describes it: arguments with
// app settings expanded, in its working directory, with the host's
// variables and the app settings only; a timer whose schedule names an
// unset setting is not loaded.
func TestStart(t *testing.T) {
	root := t.TempDir()
	exe := filepath.Base(os.Args[0])
	files := map[string]string{
		"host.json": `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"` + exe + `",` +
			`"workingDirectory":"work","arguments":["serve","--mode=%MODE%","%UNSET%"]}}}`,
		"Tick/function.json": `{"bindings":[{"type":"timerTrigger","name":"timer","schedule":"%TICK_SCHEDULE%"}]}`,
		"Tock/function.json": `{"bindings":[{"type":"timerTrigger","name":"timer","schedule":"%TOCK_SCHEDULE%"}]}`,
	}
	for name, data := range files {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "work"), 0o755); err != nil {
		t.Fatal(err)
	}

	env := []string{helperEnv + "=1", "MODE=fast", "TICK_SCHEDULE=0 * * * * *"}
	h, err := fakehost.Start(context.Background(), root, env, fakehost.Options{Executable: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	resp, err := http.Get(h.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	var started struct {
		Args []string
		Dir  string
		Env  []string
	}
	err = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"serve", "--mode=fast"}, started.Args); diff != "" {
		t.Errorf("arguments (-want +got):\n%s", diff)
	}
	if want := filepath.Join(root, "work"); started.Dir != want {
		t.Errorf("got working directory %s, want %s", started.Dir, want)
	}
	vars := map[string]string{}
	for _, kv := range started.Env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	port := fmt.Sprint(h.Port())
	for k, want := range map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": port, "FUNCTIONS_HTTPWORKER_PORT": port,
		"FUNCTIONS_APP_ROOT_PATH": root, "MODE": "fast", "PATH": ""} {
		if vars[k] != want {
			t.Errorf("%s: got %q, want %q", k, vars[k], want)
		}
	}

	if res, err := h.Timer(context.Background(), "Tick", fakehost.TimerOptions{}); err != nil || !res.Succeeded {
		t.Errorf("Tick: got %+v, %v, want a successful invocation", res, err)
	}
	if _, err := h.Timer(context.Background(), "Tock", fakehost.TimerOptions{}); err == nil || !strings.Contains(err.Error(), "TOCK_SCHEDULE") {
		t.Errorf("Tock: got %v, want the function in error naming TOCK_SCHEDULE", err)
	}

	// A stand-in must carry the name defaultExecutablePath gives.
	if _, err := fakehost.Start(context.Background(), root, env, fakehost.Options{Executable: "/bin/true"}); err == nil {
		t.Error("got a start with /bin/true for " + exe + ", want it refused")
	}
}
