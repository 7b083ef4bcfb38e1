package emulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
)

func control(t *testing.T, e *emulator.Emulator, method, path string, in, out any) int {
	t.Helper()
	var body bytes.Buffer
	if in != nil {
		json.NewEncoder(&body).Encode(in)
	}
	req, _ := http.NewRequest(method, e.ControlURL()+path, &body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func TestControlSurface(t *testing.T) {
	e := start(t)
	var vault struct{ Name, URL string }
	if s := control(t, e, "POST", "/vaults", map[string]string{"name": "ctl"}, &vault); s != 200 {
		t.Fatalf("POST /vaults: got %d", s)
	}
	var v1, v2 emulator.KeyVersionInfo
	control(t, e, "POST", "/vaults/ctl/keys/k", map[string]string{"type": "RSA"}, &v1)
	control(t, e, "POST", "/vaults/ctl/keys/k/rotate", nil, &v2)
	if v1.Version == "" || v2.Version == v1.Version || v2.KID != vault.URL+"/keys/k/"+v2.Version {
		t.Fatalf("got versions %+v and %+v, want two versions of %s/keys/k", v1, v2, vault.URL)
	}
	if s := control(t, e, "PATCH", "/vaults/ctl/keys/k/"+v1.Version,
		map[string]any{"enabled": false}, nil); s != 204 {
		t.Errorf("PATCH version: got %d, want 204", s)
	}
	var srv struct{ ID string }
	control(t, e, "PUT", "/servers", map[string]string{"name": "relay", "keyUrl": v1.KID}, &srv)
	if s := control(t, e, "PATCH", "/servers", map[string]string{"id": srv.ID, "keyUrl": v2.KID}, nil); s != 204 {
		t.Errorf("PATCH /servers: got %d, want 204", s)
	}

	var st emulator.State
	control(t, e, "GET", "/state", nil, &st)
	if len(st.Vaults) != 1 || len(st.Vaults[0].Keys) != 1 || len(st.Vaults[0].Keys[0].Versions) != 2 ||
		st.Vaults[0].Keys[0].Versions[0].Enabled || len(st.Servers) != 1 || st.Servers[0].KeyURL != v2.KID {
		t.Errorf("got state %+v, want one vault, two versions (first disabled) and one server on %s",
			st, v2.KID)
	}

	var f struct{ ID int }
	control(t, e, "POST", "/faults", map[string]any{"service": "arm", "status": 500,
		"retryAfter": "1s"}, &f)
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	_, err := armCall(context.Background(), c, "GET", srv.ID, nil, nil)
	if status, _ := errorCode(t, err); status != 500 {
		t.Errorf("GET with a fault: got %d, want 500", status)
	}
	if s := control(t, e, "DELETE", "/faults/"+itoa(f.ID), nil, nil); s != 204 {
		t.Errorf("DELETE fault: got %d, want 204", s)
	}
	if s := control(t, e, "DELETE", "/faults/"+itoa(f.ID), nil, nil); s != 404 {
		t.Errorf("DELETE fault again: got %d, want 404", s)
	}

	var reqs []emulator.Request
	control(t, e, "GET", "/requests", nil, &reqs)
	if len(reqs) == 0 || reqs[len(reqs)-1].Status != 500 {
		t.Errorf("got %d requests, want the last to have failed with 500", len(reqs))
	}
	var ev map[string]any
	control(t, e, "POST", "/events", map[string]string{"vault": "ctl", "key": "k",
		"schema": "CloudEvents"}, &ev)
	if ev["type"] != emulator.KeyNewVersionCreated || ev["specversion"] != "1.0" {
		t.Errorf("got event %v, want a CloudEvent of a new version", ev)
	}
	if s := control(t, e, "POST", "/vaults/nope/keys/k/rotate", nil, nil); s != 404 {
		t.Errorf("rotate in a missing vault: got %d, want 404", s)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestConcurrentClients hammers one vault and one resource provider from
// many SDK clients at once; run with -race.
func TestConcurrentClients(t *testing.T) {
	e := start(t)
	v := e.AddVault("busy")
	first, _ := v.CreateKey("k", emulator.KeyOptions{})
	var ids []string
	for i := range 8 {
		id, _ := e.PutServer(emulator.ServerSpec{Name: "relay-" + itoa(i), KeyURL: first.KID})
		ids = append(ids, id)
	}
	cred := credential(t, e, e.HTTPClient())
	e.SetThrottle(&emulator.ARMDefaultThrottle)
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 24 {
		wg.Go(func() {
			kc := keysClient(t, v.URL(), cred, e.HTTPClient())
			ac := armClient(t, e, cred, e.HTTPClient())
			for range 5 {
				info, err := v.RotateKey("k")
				if err != nil {
					errs <- err
					return
				}
				if _, err := kc.GetKey(ctx, "k", info.Version, nil); err != nil {
					errs <- err
					return
				}
				id := ids[i%len(ids)]
				if _, err := armCall(ctx, ac, http.MethodPatch, id, keyPatch(info.KID), nil); err != nil {
					errs <- err
					return
				}
				if _, err := armCall(ctx, ac, http.MethodGet, id, nil, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	vs, _ := v.Versions("k")
	if len(vs) != 1+24*5 {
		t.Errorf("got %d versions, want %d", len(vs), 1+24*5)
	}
	for i := 1; i < len(vs); i++ {
		if !vs[i].Created.After(vs[i-1].Created) {
			t.Fatalf("version %d created %v, not after %v", i, vs[i].Created, vs[i-1].Created)
		}
	}
}

// TestControlIndex: GET / lists every route, and every route it lists is
// served (answers something other than the mux's own 404 or 405).
func TestControlIndex(t *testing.T) {
	e := start(t)
	var index []emulator.Route
	if s := control(t, e, "GET", "/", nil, &index); s != http.StatusOK {
		t.Fatalf("GET /: got %d, want 200", s)
	}
	seen := map[string]bool{}
	for _, r := range index {
		seen[r.Method+" "+r.Path] = true
		if r.Does == "" {
			t.Errorf("%s %s: got no description, want what it does", r.Method, r.Path)
		}
		if r.Path == "/" {
			continue
		}
		path := strings.NewReplacer("{vault}", "none", "{key}", "none", "{version}", "none", "{id}", "1").Replace(r.Path)
		req, _ := http.NewRequest(r.Method, e.ControlURL()+path, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusMethodNotAllowed || strings.HasPrefix(string(body), "404 page not found") {
			t.Errorf("%s %s: got %d %q, want the route served", r.Method, path, resp.StatusCode, body)
		}
	}
	for _, want := range []string{"GET /", "GET /state", "POST /faults", "PUT /servers", "POST /events"} {
		if !seen[want] {
			t.Errorf("got index %+v, want %s listed", index, want)
		}
	}
	if s := control(t, e, "GET", "/nowhere", nil, nil); s != http.StatusNotFound {
		t.Errorf("GET /nowhere: got %d, want 404", s)
	}
}

// PATCH of a version changes the attributes its body names: an absent
// member leaves its attribute, null removes a time.
func TestControlSurface_UpdateVersionAttributes(t *testing.T) {
	type attrs struct {
		Enabled            bool
		NotBefore, Expires time.Time
	}
	nbf := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	exp := time.Date(2040, 1, 2, 3, 4, 5, 0, time.UTC)
	later := time.Date(2041, 6, 7, 8, 9, 10, 0, time.UTC)
	tests := []struct {
		name string
		body map[string]any
		want attrs
	}{
		{"nothing", map[string]any{}, attrs{true, nbf, exp}},
		{"enabled only", map[string]any{"enabled": false}, attrs{false, nbf, exp}},
		{"expires null", map[string]any{"expires": nil}, attrs{true, nbf, time.Time{}}},
		{"notBefore null", map[string]any{"notBefore": nil}, attrs{true, time.Time{}, exp}},
		{"both null", map[string]any{"notBefore": nil, "expires": nil}, attrs{true, time.Time{}, time.Time{}}},
		{"new expiry", map[string]any{"expires": later}, attrs{true, nbf, later}},
		{"new activation", map[string]any{"notBefore": later}, attrs{true, later, exp}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t)
			control(t, e, "POST", "/vaults", map[string]string{"name": "attrs"}, nil)
			var info emulator.KeyVersionInfo
			if s := control(t, e, "POST", "/vaults/attrs/keys/k",
				map[string]any{"notBefore": nbf, "expires": exp}, &info); s != http.StatusOK {
				t.Fatalf("POST key: got %d, want 200", s)
			}
			if s := control(t, e, "PATCH", "/vaults/attrs/keys/k/"+info.Version, tt.body, nil); s != http.StatusNoContent {
				t.Fatalf("PATCH version: got %d, want 204", s)
			}
			var st emulator.State
			control(t, e, "GET", "/state", nil, &st)
			vs := st.Vaults[0].Keys[0].Versions[0]
			got := attrs{vs.Enabled, vs.NotBefore, vs.Expires}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("attributes mismatch (-want +got):\n%s", diff)
			}
		})
	}

	e := start(t)
	control(t, e, "POST", "/vaults", map[string]string{"name": "attrs"}, nil)
	control(t, e, "POST", "/vaults/attrs/keys/k", nil, nil)
	if s := control(t, e, "PATCH", "/vaults/attrs/keys/k/current",
		map[string]any{"expires": "tomorrow"}, nil); s != http.StatusBadRequest {
		t.Errorf("PATCH with a bad time: got %d, want 400", s)
	}
	if s := control(t, e, "PATCH", "/vaults/attrs/keys/none/current",
		map[string]any{"notBefore": nil}, nil); s != http.StatusNotFound {
		t.Errorf("PATCH of a missing key: got %d, want 404", s)
	}
}

// POST /faults refuses a service or method no request can match, naming
// the valid ones, which GET / lists too, and a status outside HTTP's.
func TestControlSurface_FaultValidation(t *testing.T) {
	e := start(t)
	services := []string{"arm", "keyvault", "identity"}
	methods := []string{"GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"}
	tests := []struct {
		name       string
		fault      map[string]any
		wantStatus int
		wantListed []string // names the error message must list
	}{
		{"unknown service", map[string]any{"service": "fluidrelay", "status": 500}, 400, services},
		{"unknown method", map[string]any{"service": "arm", "method": "FETCH", "status": 500}, 400, methods},
		{"status below 100", map[string]any{"service": "arm", "status": 42}, 400, []string{"100-599"}},
		{"status above 599", map[string]any{"service": "arm", "status": 1000}, 400, []string{"100-599"}},
		{"any service", map[string]any{"status": 500, "times": 1}, 200, nil},
		{"every service and method, any case", nil, 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			faults := []map[string]any{tt.fault}
			if tt.fault == nil {
				faults = nil
				for _, s := range services {
					for _, m := range methods {
						faults = append(faults, map[string]any{"service": strings.ToUpper(s),
							"method": strings.ToLower(m), "status": 500})
					}
				}
			}
			for _, f := range faults {
				var body struct {
					ID    int    `json:"id"`
					Error string `json:"error"`
				}
				if s := control(t, e, "POST", "/faults", f, &body); s != tt.wantStatus {
					t.Fatalf("POST /faults %v: got %d %+v, want %d", f, s, body, tt.wantStatus)
				}
				for _, name := range tt.wantListed {
					if !strings.Contains(body.Error, name) {
						t.Errorf("got error %q, want it to list %s", body.Error, name)
					}
				}
			}
			control(t, e, "DELETE", "/faults", nil, nil)
		})
	}

	var index []emulator.Route
	control(t, e, "GET", "/", nil, &index)
	var got map[string][]string
	for _, r := range index {
		if r.Method == "POST" && r.Path == "/faults" {
			got = r.Values
		}
	}
	want := map[string][]string{"service": services, "method": methods}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET / values of POST /faults mismatch (-want +got):\n%s", diff)
	}
}
