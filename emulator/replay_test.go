package emulator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// examplesDir holds the Fluid Relay 2022-06-01 examples of the swagger in
// Azure/azure-rest-api-specs, copied verbatim (SOURCES.md says from where).
const examplesDir = "testdata/fluidrelay-2022-06-01"

type example struct {
	Parameters map[string]json.RawMessage `json:"parameters"`
	Responses  map[string]struct {
		Body json.RawMessage `json:"body"`
	} `json:"responses"`
}

func (x example) param(name string) string {
	var s string
	json.Unmarshal(x.Parameters[name], &s)
	return s
}

// TestReplayExamples sends every request of the swagger's examples and
// checks that the answer has the example's status and every field the
// example's body has, with the same values where they are not generated.
func TestReplayExamples(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(examplesDir, "*.json"))
	if len(files) != 14 {
		t.Fatalf("got %d examples in %s, want 14", len(files), examplesDir)
	}
	e := start(t)
	v := e.AddVault("contosovault")
	if _, err := v.CreateKey("contosokek", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	c := armClient(t, e, credential(t, e, e.HTTPClient()), e.HTTPClient())

	for _, f := range files {
		op := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(op, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var x example
			if err := json.Unmarshal(b, &x); err != nil {
				t.Fatal(err)
			}
			sub, rg := x.param("subscriptionId"), x.param("resourceGroup")
			name := x.param("fluidRelayServerName")
			id := emulator.ServerID(sub, rg, name)

			// Every example but the creations expects the server to exist.
			e.DeleteServer(id)
			if name != "" && !strings.Contains(op, "Create") {
				if _, err := e.PutServer(emulator.ServerSpec{Subscription: sub, ResourceGroup: rg,
					Name: name, Location: "west-us"}); err != nil {
					t.Fatal(err)
				}
				if _, err := e.AddContainer(id, "myFluidRelayContainer"); err != nil {
					t.Fatal(err)
				}
			}

			method, path, body := replayRequest(t, op, x, id)
			var got any
			resp, err := armCall(context.Background(), c, method, path, body, &got)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			want, ok := x.Responses[strconv.Itoa(resp.StatusCode)]
			if !ok {
				t.Fatalf("got status %d, want one of the example's", resp.StatusCode)
			}
			if len(want.Body) == 0 {
				return
			}
			var wantBody any
			if err := json.Unmarshal(want.Body, &wantBody); err != nil {
				t.Fatal(err)
			}
			compareShape(t, "", wantBody, got)
		})
	}
}

func replayRequest(t *testing.T, op string, x example, id string) (method, path string, body any) {
	t.Helper()
	sub, rg := x.param("subscriptionId"), x.param("resourceGroup")
	list := "/providers/Microsoft.FluidRelay/fluidRelayServers"
	container := id + "/fluidRelayContainers/" + x.param("fluidRelayContainerName")
	var resource any
	json.Unmarshal(x.Parameters["resource"], &resource)
	switch op {
	case "FluidRelayServers_Get":
		return http.MethodGet, id, nil
	case "FluidRelayServers_CreateOrUpdate", "FluidRelayServers_CreateWithAmi",
		"FluidRelayServers_CreateWithCmk":
		return http.MethodPut, id, resource
	case "FluidRelayServers_Update":
		return http.MethodPatch, id, resource
	case "FluidRelayServers_Delete":
		return http.MethodDelete, id, nil
	case "FluidRelayServers_ListByResourceGroup":
		return http.MethodGet, "/subscriptions/" + sub + "/resourceGroups/" + rg + list, nil
	case "FluidRelayServers_ListBySubscription":
		return http.MethodGet, "/subscriptions/" + sub + list, nil
	case "FluidRelayServers_ListKeys":
		return http.MethodPost, id + "/listKeys", nil
	case "FluidRelayServers_RegenerateKeys":
		var p any
		json.Unmarshal(x.Parameters["parameters"], &p)
		return http.MethodPost, id + "/regenerateKey", p
	case "FluidRelayContainers_Get":
		return http.MethodGet, container, nil
	case "FluidRelayContainers_Delete":
		return http.MethodDelete, container, nil
	case "FluidRelayContainers_ListByFluidRelayServer":
		return http.MethodGet, id + "/fluidRelayContainers", nil
	case "FluidRelayServerOperations":
		return http.MethodGet, "/providers/Microsoft.FluidRelay/operations", nil
	}
	t.Fatalf("no request known for example %s", op)
	return "", "", nil
}

// generated are fields whose values the service makes up.
var generated = []string{"frsTenantId", "frsContainerId", "principalId", "tenantId", "clientId",
	"creationTime", "lastAccessTime", "key1", "key2", "ordererEndpoints", "storageEndpoints",
	"serviceEndpoints", "nextLink"}

// compareShape checks that got has every field of want; leaf values must
// match except generated ones, ids (the examples lack "/providers/"), and
// identity types (the CreateWithAmi example answers another type than it
// asked for).
func compareShape(t *testing.T, path string, want, got any) {
	t.Helper()
	last := path[strings.LastIndexByte(path, '.')+1:]
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			t.Errorf("%s: got %T, want an object", path, got)
			return
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			gv, ok := g[k]
			if !ok && path+"."+k == ".identity.principalId" && g["type"] == "UserAssigned" {
				continue // the example reports one; a user-assigned-only identity has none
			}
			if !ok {
				t.Errorf("%s.%s: missing", path, k)
				continue
			}
			compareShape(t, path+"."+k, w[k], gv)
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			t.Errorf("%s: got %v, want %d elements", path, got, len(w))
			return
		}
		if slices.Contains(generated, last) {
			return
		}
		for i := range w {
			compareShape(t, path+"["+strconv.Itoa(i)+"]", w[i], g[i])
		}
	default:
		switch {
		case slices.Contains(generated, last):
		case last == "id":
			wantID := strings.Replace(w.(string), "/myResourceGroup/Microsoft.", "/myResourceGroup/providers/Microsoft.", 1)
			if got != wantID {
				t.Errorf("%s: got %v, want %v", path, got, wantID)
			}
		case path == ".identity.type":
		case got != want:
			t.Errorf("%s: got %v, want %v", path, got, want)
		}
	}
}
