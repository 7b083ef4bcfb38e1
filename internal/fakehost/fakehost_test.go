package fakehost_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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
	return rec.reqs[len(rec.reqs)-1], rec.bodies[len(rec.bodies)-1]
}

func start(t *testing.T, rec *recorder, opts fakehost.Options) *fakehost.Host {
	t.Helper()
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	h, err := fakehost.New(srv.URL, opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
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

func TestEventGridRequestShape(t *testing.T) {
	rec := &recorder{status: 200, contentType: "application/json", body: `{"Outputs":{},"Logs":["done"],"ReturnValue":null}`}
	h := start(t, rec, fakehost.Options{})

	for _, asString := range []bool{false, true} {
		res, err := h.EventGrid(context.Background(), "KeyNewVersionCreated", []byte(event), fakehost.EventOptions{AsString: asString})
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

		compactEvent := `{"id":"00eccf70-95a7-4e7c-8299-2eb17ee9ad64","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv","subject":"fluid-cmk","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","eventTime":"2019-07-25T01:08:33.103673Z","data":{"Id":"https://kv.vault.azure.net/keys/fluid-cmk/abc","VaultName":"kv","ObjectType":"Key","ObjectName":"fluid-cmk","Version":"abc","NBF":1559081980,"EXP":null},"dataVersion":"1","metadataVersion":"1"}`
		value := compactEvent
		if asString {
			b, _ := json.Marshal(compactEvent)
			value = string(b)
		}
		wantPrefix := `{"Data":{"event":` + value + `},"Metadata":{"data":{"Id":"https://kv.vault.azure.net/keys/fluid-cmk/abc","VaultName":"kv","ObjectType":"Key","ObjectName":"fluid-cmk","Version":"abc","NBF":1559081980,"EXP":null},"sys":{"MethodName":"KeyNewVersionCreated","UtcNow":"`
		if !strings.HasPrefix(string(body), wantPrefix) {
			t.Errorf("got body\n%s\nwant prefix\n%s", body, wantPrefix)
		}
		if diff := cmp.Diff([]string{"done"}, res.Logs); diff != "" {
			t.Errorf("logs (-want +got):\n%s", diff)
		}
		if got, want := res.EventGridStatus(), http.StatusAccepted; got != want {
			t.Errorf("got Event Grid status %d, want %d", got, want)
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
			h := start(t, rec, fakehost.Options{})
			res, err := h.Timer(context.Background(), "Reconcile", fakehost.TimerOptions{})
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
	h := start(t, rec, fakehost.Options{})
	res, err := h.Timer(context.Background(), "F", fakehost.TimerOptions{})
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

func TestForward(t *testing.T) {
	rec := &recorder{status: 418, contentType: "application/problem+json", body: `{"title":"teapot"}`}
	h := start(t, rec, fakehost.Options{FunctionKey: "k1"})

	t.Run("no key", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodPost, "http://localhost:7071/api/rotate", strings.NewReader(`{}`))
		resp, err := h.Forward(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := resp.StatusCode, http.StatusUnauthorized; got != want {
			t.Errorf("got %d, want %d", got, want)
		}
	})

	t.Run("with key", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodPost, "http://localhost:7071/api/rotate?code=k1&x=1&x=2", strings.NewReader(`{"a":1}`))
		req.Header.Set("User-Agent", "curl/8.5.0")
		resp, err := h.Forward(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 418 || string(body) != `{"title":"teapot"}` {
			t.Errorf("got %d %s, want the handler's answer passed through", resp.StatusCode, body)
		}
		got, gotBody := rec.last()
		if got.URL.Path != "/api/rotate" || got.URL.RawQuery != "code=k1&x=1%2C2" {
			t.Errorf("got %s?%s, want /api/rotate?code=k1&x=1%%2C2", got.URL.Path, got.URL.RawQuery)
		}
		if string(gotBody) != `{"a":1}` {
			t.Errorf("got body %q, want the client's", gotBody)
		}
		if got, want := got.Header.Get("User-Agent"), "curl/8.5.0 Azure-Functions-Host/"+fakehost.DefaultVersion; got != want {
			t.Errorf("got user agent %q, want %q", got, want)
		}
		if got.Header.Get("X-Azure-Functions-InvocationId") == "" {
			t.Error("got no invocation id, want one")
		}
	})
}
