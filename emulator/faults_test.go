package emulator_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator"
)

func TestFault_StatusTimesAndRemove(t *testing.T) {
	e := start(t)
	v := e.AddVault("faulty")
	info, _ := v.CreateKey("k", emulator.KeyOptions{})
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay", KeyURL: info.KID})
	cred := credential(t, e, e.HTTPClient())
	kc := keysClient(t, v.URL(), cred, e.HTTPClient())
	ac := armClient(t, e, cred, e.HTTPClient())
	ctx := context.Background()

	e.InjectFault(emulator.Fault{Service: "arm", Method: "GET", PathSuffix: "/fluidRelayServers/RELAY",
		Status: 503, RetryAfter: 1500 * time.Millisecond, Times: 1})
	resp, err := armCall(ctx, ac, http.MethodGet, id, nil, nil)
	if status, code := errorCode(t, err); status != 503 || code != "ServiceUnavailable" {
		t.Errorf("first GET: got %d %s, want 503 ServiceUnavailable", status, code)
	}
	if got := resp.Header.Get("Retry-After"); got != "2" {
		t.Errorf("got Retry-After %q, want 2", got)
	}
	if _, err := armCall(ctx, ac, http.MethodGet, id, nil, nil); err != nil {
		t.Errorf("second GET: got %v, want success after one fault", err)
	}

	remove := e.InjectFault(emulator.Fault{Service: "keyvault", PathSuffix: "/keys/k",
		Status: 429, Code: "Throttled"})
	for range 2 {
		_, err := kc.GetKey(ctx, "k", "", nil)
		if status, code := errorCode(t, err); status != 429 || code != "Throttled" {
			t.Errorf("GetKey: got %d %s, want 429 Throttled", status, code)
		}
	}
	remove()
	if _, err := kc.GetKey(ctx, "k", "", nil); err != nil {
		t.Errorf("GetKey after remove: %v", err)
	}

	e.InjectFault(emulator.Fault{Service: "identity", Status: 500})
	q := url.Values{"api-version": {"2019-08-01"}, "resource": {"https://vault.azure.net"},
		"client_id": {e.ClientID()}}
	req, _ := http.NewRequest(http.MethodGet, e.IdentityEndpoint()+"?"+q.Encode(), nil)
	req.Header.Set("X-IDENTITY-HEADER", e.IdentityHeader())
	r, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 500 {
		t.Errorf("identity: got %d, want 500", r.StatusCode)
	}
	e.ClearFaults()
	if _, err := armCall(ctx, ac, http.MethodGet, id, nil, nil); err != nil {
		t.Errorf("GET after ClearFaults: %v", err)
	}
}

func TestFault_Reset(t *testing.T) {
	e := start(t)
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay"})
	cred := credential(t, e, e.HTTPClient())
	ctx := context.Background()
	for name, tr := range map[string]interface {
		Do(*http.Request) (*http.Response, error)
	}{"sockets": e.HTTPClient(), "in process": e.InProcessTransport().(interface {
		Do(*http.Request) (*http.Response, error)
	})} {
		t.Run(name, func(t *testing.T) {
			e.ResetRequests()
			c := armClient(t, e, cred, tr)
			e.InjectFault(emulator.Fault{Service: "arm", Method: "PATCH", Reset: true, Times: 1})
			_, err := armCall(ctx, c, http.MethodPatch, id, map[string]any{"tags": map[string]string{}}, nil)
			var re *azcore.ResponseError
			if err == nil || errors.As(err, &re) {
				t.Fatalf("got %v, want a transport error", err)
			}
			if name == "in process" && !errors.Is(err, emulator.ErrConnectionReset) {
				t.Errorf("got %v, want ErrConnectionReset", err)
			}
			reqs := e.Requests()
			if len(reqs) != 1 || reqs[0].Status != 0 || reqs[0].Method != "PATCH" {
				t.Errorf("got requests %+v, want one PATCH recorded with status 0", reqs)
			}
		})
	}
}

func TestFault_StaleReads(t *testing.T) {
	e := start(t)
	v := e.AddVault("stale")
	a, _ := v.CreateKey("k", emulator.KeyOptions{})
	b, _ := v.CreateKey("k", emulator.KeyOptions{})
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay", KeyURL: a.KID})
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()

	e.InjectFault(emulator.Fault{Service: "arm", PathSuffix: "/relay", StaleReads: 2, Times: 1})
	var patched server
	if _, err := armCall(ctx, c, http.MethodPatch, id, keyPatch(b.KID), &patched); err != nil {
		t.Fatal(err)
	}
	if patched.keyURL() != b.KID {
		t.Errorf("PATCH: got %s, want %s", patched.keyURL(), b.KID)
	}
	for i, want := range []string{a.KID, a.KID, b.KID, b.KID} {
		var got server
		if _, err := armCall(ctx, c, http.MethodGet, id, nil, &got); err != nil {
			t.Fatal(err)
		}
		if got.keyURL() != want {
			t.Errorf("GET %d: got %s, want %s", i, got.keyURL(), want)
		}
	}
}

func TestFault_LatencyInBubble(t *testing.T) {
	e := start(t)
	v := e.AddVault("slow")
	if _, err := v.CreateKey("k", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	tr := e.InProcessTransport().(interface {
		Do(*http.Request) (*http.Response, error)
	})
	cred := credential(t, e, tr)
	synctest.Test(t, func(t *testing.T) {
		kc := keysClient(t, v.URL(), cred, tr)
		e.InjectFault(emulator.Fault{Service: "keyvault", Latency: 10 * time.Second, Times: 1})
		start := time.Now()
		if _, err := kc.GetKey(context.Background(), "k", "", nil); err != nil {
			t.Fatalf("GetKey: %v", err)
		}
		if got := time.Since(start); got != 10*time.Second {
			t.Errorf("got latency %v, want 10s", got)
		}

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		e.InjectFault(emulator.Fault{Service: "keyvault", Latency: time.Minute, Times: 1})
		if _, err := kc.GetKey(ctx, "k", "", nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("GetKey with a 1s deadline: got %v, want deadline exceeded", err)
		}
	})
}

func TestThrottle(t *testing.T) {
	e := start(t)
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay"})
	tr := e.InProcessTransport().(interface {
		Do(*http.Request) (*http.Response, error)
	})
	cred := credential(t, e, tr)
	synctest.Test(t, func(t *testing.T) {
		c := armClient(t, e, cred, tr)
		ctx := context.Background()
		e.SetThrottle(&emulator.Throttle{ReadBurst: 2, ReadRefillPerSec: 0.5, WriteBurst: 1,
			WriteRefillPerSec: 1})
		defer e.SetThrottle(nil)

		for _, want := range []string{"1", "0"} {
			resp, err := armCall(ctx, c, http.MethodGet, id, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Header.Get("x-ms-ratelimit-remaining-subscription-reads"); got != want {
				t.Errorf("got remaining reads %q, want %q", got, want)
			}
		}
		resp, err := armCall(ctx, c, http.MethodGet, id, nil, nil)
		if status, code := errorCode(t, err); status != 429 || code != "SubscriptionRequestsThrottled" {
			t.Fatalf("third GET: got %d %s, want 429 SubscriptionRequestsThrottled", status, code)
		}
		if got := resp.Header.Get("Retry-After"); got != "2" {
			t.Errorf("got Retry-After %q, want 2", got)
		}

		// Writes have their own bucket.
		resp, err = armCall(ctx, c, http.MethodPatch, id, map[string]any{}, nil)
		if err != nil {
			t.Fatalf("PATCH while reads are throttled: %v", err)
		}
		if got := resp.Header.Get("x-ms-ratelimit-remaining-subscription-writes"); got != "0" {
			t.Errorf("got remaining writes %q, want 0", got)
		}

		time.Sleep(2 * time.Second)
		if _, err := armCall(ctx, c, http.MethodGet, id, nil, nil); err != nil {
			t.Errorf("GET after the refill: %v", err)
		}
	})
}

// ARMDefaultThrottle, run through the buckets: reads pass 250 at once and
// 25 a second after that, writes 200 and 10 a second.
func TestThrottle_DefaultPreset(t *testing.T) {
	e := start(t)
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay"})
	tr := inProcess(e)
	cred := credential(t, e, tr)
	tests := []struct {
		kind, method  string
		burst, refill int
	}{
		{"reads", http.MethodGet, 250, 25},
		{"writes", http.MethodPatch, 200, 10},
	}
	synctest.Test(t, func(t *testing.T) {
		c := armClient(t, e, cred, tr)
		ctx := context.Background()
		e.SetThrottle(&emulator.ARMDefaultThrottle)
		defer e.SetThrottle(nil)

		for _, tt := range tests {
			header := "x-ms-ratelimit-remaining-subscription-" + tt.kind
			var body any
			if tt.method == http.MethodPatch {
				body = map[string]any{}
			}
			// pass sends n requests that must pass, then one that must be
			// throttled.
			pass := func(n int) {
				t.Helper()
				for i := range n {
					resp, err := armCall(ctx, c, tt.method, id, body, nil)
					if err != nil {
						t.Fatalf("%s %d of %d: %v", tt.kind, i+1, n, err)
					}
					if got, want := resp.Header.Get(header), strconv.Itoa(n-i-1); got != want {
						t.Fatalf("%s %d of %d: got %s %q, want %q", tt.kind, i+1, n, header, got, want)
					}
				}
				resp, err := armCall(ctx, c, tt.method, id, body, nil)
				if status, code := errorCode(t, err); status != 429 || code != "SubscriptionRequestsThrottled" {
					t.Fatalf("%s %d: got %d %s, want 429 SubscriptionRequestsThrottled", tt.kind, n+1,
						status, code)
				}
				if got := resp.Header.Get("Retry-After"); got != "1" {
					t.Errorf("%s %d: got Retry-After %q, want 1", tt.kind, n+1, got)
				}
				if got := resp.Header.Get(header); got != "0" {
					t.Errorf("%s %d: got %s %q, want 0", tt.kind, n+1, header, got)
				}
			}
			pass(tt.burst)
			time.Sleep(time.Second)
			pass(tt.refill)
		}
	})
}

func TestFault_ProvisioningState(t *testing.T) {
	tests := []struct {
		name  string
		fault emulator.Fault
		want  []string // the PATCH's answer, then five GETs
	}{
		{"updating for two reads", emulator.Fault{Service: "arm", Method: http.MethodPatch,
			ProvisioningState: "Updating", StateReads: 2},
			[]string{"Updating", "Updating", "Updating", "Succeeded", "Succeeded", "Succeeded"}},
		{"failed until the next write", emulator.Fault{Service: "arm", Method: http.MethodPatch,
			ProvisioningState: "Failed"},
			[]string{"Failed", "Failed", "Failed", "Failed", "Failed", "Failed"}},
		{"with stale reads", emulator.Fault{Service: "arm", Method: http.MethodPatch,
			ProvisioningState: "Updating", StateReads: 1, StaleReads: 1},
			[]string{"Updating", "Updating", "Succeeded", "Succeeded", "Succeeded", "Succeeded"}},
		{"another server", emulator.Fault{Service: "arm", PathSuffix: "/other", ProvisioningState: "Failed"},
			[]string{"Succeeded", "Succeeded", "Succeeded", "Succeeded", "Succeeded", "Succeeded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t)
			v := e.AddVault("prov")
			a, _ := v.CreateKey("k", emulator.KeyOptions{})
			b, _ := v.CreateKey("k", emulator.KeyOptions{})
			id, _ := e.PutServer(emulator.ServerSpec{Name: "relay", KeyURL: a.KID})
			c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
			ctx := context.Background()
			e.InjectFault(tt.fault)

			var patched server
			if _, err := armCall(ctx, c, http.MethodPatch, id, keyPatch(b.KID), &patched); err != nil {
				t.Fatal(err)
			}
			got := []string{patched.Properties.ProvisioningState}
			for range 5 {
				var s server
				if _, err := armCall(ctx, c, http.MethodGet, id, nil, &s); err != nil {
					t.Fatal(err)
				}
				got = append(got, s.Properties.ProvisioningState)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("provisioning states mismatch (-want +got):\n%s", diff)
			}
			if tt.fault.StaleReads > 0 {
				return
			}
			// The state shows in State and ends with ClearFaults.
			if st := e.State(); st.Servers[0].ProvisioningState != tt.want[len(tt.want)-1] {
				t.Errorf("State: got %q, want %q", st.Servers[0].ProvisioningState, tt.want[len(tt.want)-1])
			}
			e.ClearFaults()
			var s server
			if _, err := armCall(ctx, c, http.MethodGet, id, nil, &s); err != nil {
				t.Fatal(err)
			}
			if s.Properties.ProvisioningState != "Succeeded" {
				t.Errorf("after ClearFaults: got %q, want Succeeded", s.Properties.ProvisioningState)
			}
		})
	}
}

func TestFault_ProvisioningStateEndsWithTheNextWrite(t *testing.T) {
	e := start(t)
	v := e.AddVault("prov")
	a, _ := v.CreateKey("k", emulator.KeyOptions{})
	b, _ := v.CreateKey("k", emulator.KeyOptions{})
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay", KeyURL: a.KID})
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()
	e.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, ProvisioningState: "Failed", Times: 1})

	var got []string
	for _, url := range []string{b.KID, b.KID} { // the second PATCH changes nothing but settles
		if _, err := armCall(ctx, c, http.MethodPatch, id, keyPatch(url), nil); err != nil {
			t.Fatal(err)
		}
		var s server
		if _, err := armCall(ctx, c, http.MethodGet, id, nil, &s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s.Properties.ProvisioningState)
	}
	if diff := cmp.Diff([]string{"Failed", "Succeeded"}, got); diff != "" {
		t.Errorf("provisioning states mismatch (-want +got):\n%s", diff)
	}
}

func TestSetServerProvisioningState(t *testing.T) {
	e := start(t)
	v := e.AddVault("prov")
	a, _ := v.CreateKey("k", emulator.KeyOptions{})
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay", KeyURL: a.KID})
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())
	ctx := context.Background()
	get := func() string {
		t.Helper()
		var s server
		if _, err := armCall(ctx, c, http.MethodGet, id, nil, &s); err != nil {
			t.Fatal(err)
		}
		return s.Properties.ProvisioningState
	}

	if err := e.SetServerProvisioningState(id, "Updating"); err != nil {
		t.Fatal(err)
	}
	e.ClearFaults() // not a fault: the state stays
	if got := [2]string{get(), get()}; got != [2]string{"Updating", "Updating"} {
		t.Errorf("after SetServerProvisioningState: got %v, want Updating twice", got)
	}
	if s := control(t, e, "PATCH", "/servers", map[string]string{"id": id, "provisioningState": "Failed"}, nil); s != http.StatusNoContent {
		t.Errorf("PATCH /servers: got %d, want 204", s)
	}
	var st emulator.State
	control(t, e, "GET", "/state", nil, &st)
	if got := st.Servers[0]; got.ProvisioningState != "Failed" || got.KeyURL != a.KID {
		t.Errorf("state: got %+v, want Failed on %s", got, a.KID)
	}
	if _, err := armCall(ctx, c, http.MethodPatch, id, keyPatch(a.KID), nil); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "Succeeded" {
		t.Errorf("after a write: got %q, want Succeeded", got)
	}

	if err := e.SetServerProvisioningState(id+"-missing", "Failed"); !errors.Is(err, emulator.ErrNotFound) {
		t.Errorf("missing server: got %v, want ErrNotFound", err)
	}
	if err := e.SetServerProvisioningState(id, ""); !errors.Is(err, emulator.ErrInvalid) {
		t.Errorf("empty state: got %v, want ErrInvalid", err)
	}
	if s := control(t, e, "PATCH", "/servers", map[string]string{"id": id, "provisioningState": ""}, nil); s != http.StatusBadRequest {
		t.Errorf("PATCH /servers with an empty state: got %d, want 400", s)
	}
	var f struct{ ID int }
	if s := control(t, e, "POST", "/faults", map[string]any{"service": "arm", "method": "PATCH",
		"provisioningState": "Updating", "stateReads": 1}, &f); s != http.StatusOK || f.ID == 0 {
		t.Fatalf("POST /faults: got %d %+v, want 200 and an id", s, f)
	}
	if _, err := armCall(ctx, c, http.MethodPatch, id, keyPatch(a.KID), nil); err != nil {
		t.Fatal(err)
	}
	if got := [2]string{get(), get()}; got != [2]string{"Updating", "Succeeded"} {
		t.Errorf("after a fault from the control surface: got %v, want Updating then Succeeded", got)
	}
}
