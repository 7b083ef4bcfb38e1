package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Route is one route of the control surface, as GET / lists it.
type Route struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Does   string `json:"does"`
	// Values lists, by body member, the only values the route accepts
	// for it; nil when no member is restricted.
	Values map[string][]string `json:"values,omitempty"`
}

// controlRoute is a Route and its handler.
type controlRoute struct {
	Route
	h http.HandlerFunc
}

// controlRoutes lists the control surface; GET / answers it as JSON.
func (e *Emulator) controlRoutes() []controlRoute {
	return []controlRoute{
		{Route{"GET", "/", "this index of routes", nil}, nil},
		{Route{"GET", "/state", "every vault, key version and server", nil}, e.ctlState},
		{Route{"POST", "/vaults", `add a vault: {"name"}`, nil}, e.ctlAddVault},
		{Route{"PATCH", "/vaults/{vault}", `change a vault: {"keyIdHost"}, the host its kids name ("": its own)`, nil}, e.ctlUpdateVault},
		{Route{"POST", "/vaults/{vault}/keys/{key}",
			`create a key version: {"type","ops","disabled","notBefore","expires"}, all optional`, nil}, e.ctlCreateKey},
		{Route{"POST", "/vaults/{vault}/keys/{key}/rotate", "create a new version of a key", nil}, e.ctlRotateKey},
		{Route{"PATCH", "/vaults/{vault}/keys/{key}/{version}",
			`change a version: {"enabled","notBefore","expires"}, each optional, null removes a time; "current" names the newest`, nil}, e.ctlUpdateVersion},
		{Route{"DELETE", "/vaults/{vault}/keys/{key}", "delete a key and all its versions", nil}, e.ctlDeleteKey},
		{Route{"PUT", "/servers",
			`create or replace a Fluid Relay server: {"subscription","resourceGroup","name","location","identity","keyUrl"}; answers {"id"}`, nil},
			e.ctlPutServer},
		{Route{"PATCH", "/servers", `change a server behind the product's back: {"id","keyUrl","provisioningState"}, each optional but id`, nil}, e.ctlUpdateServer},
		{Route{"DELETE", "/servers", "delete the server named by ?id=", nil}, e.ctlDeleteServer},
		{Route{"POST", "/faults", `inject a fault: {"service","method","pathSuffix","status","code","retryAfter","times","latency","reset","staleReads","provisioningState","stateReads"}, durations as "1.5s"; service and method one of values, absent for any; answers {"id"}`,
			map[string][]string{"service": faultServices, "method": faultMethods}}, e.ctlAddFault},
		{Route{"DELETE", "/faults", "remove every fault", nil}, func(w http.ResponseWriter, r *http.Request) {
			e.ClearFaults()
			w.WriteHeader(http.StatusNoContent)
		}},
		{Route{"DELETE", "/faults/{id}", "remove one fault", nil}, e.ctlRemoveFault},
		{Route{"PUT", "/throttle", "throttle Resource Manager with a Throttle, or null to stop", nil}, e.ctlThrottle},
		{Route{"GET", "/requests", "the requests recorded so far", nil}, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, orNone(e.Requests()))
		}},
		{Route{"DELETE", "/requests", "forget the recorded requests", nil}, func(w http.ResponseWriter, r *http.Request) {
			e.ResetRequests()
			w.WriteHeader(http.StatusNoContent)
		}},
		{Route{"POST", "/events", `build a Key Vault event: {"type","vault","key","version","schema"}`, nil}, e.ctlEvent},
	}
}

// controlHandler serves the JSON control surface documented in the
// package documentation, with its index at GET /.
func (e *Emulator) controlHandler() http.Handler {
	mux := http.NewServeMux()
	routes := e.controlRoutes()
	index := make([]Route, len(routes))
	for i, r := range routes {
		index[i] = r.Route
		if r.h != nil {
			mux.HandleFunc(r.Method+" "+r.Path, r.h)
		}
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, index)
	})
	return mux
}

func orNone[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func ctlError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	if errors.Is(err, ErrNotFound) {
		status = http.StatusNotFound
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// ctlDone answers an operation that returns nothing: 204 No Content, or
// the error.
func ctlDone(w http.ResponseWriter, err error) {
	if err != nil {
		ctlError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ctlResult answers an operation's result as JSON, or its error.
func ctlResult(w http.ResponseWriter, v any, err error) {
	if err != nil {
		ctlError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func decode(r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody)).Decode(v); err != nil {
		return fmt.Errorf("decode request body: %w: %v", ErrInvalid, err)
	}
	return nil
}

// State is what GET /state answers: every vault, key version and server.
type State struct {
	Vaults  []VaultState  `json:"vaults"`
	Servers []ServerState `json:"servers"`
}

// VaultState describes one vault in State.
type VaultState struct {
	Name      string     `json:"name"`
	URL       string     `json:"url"`
	KeyIDHost string     `json:"keyIdHost,omitempty"` // set by SetKeyIDHost
	Keys      []KeyState `json:"keys"`
}

// KeyState describes one key in State; versions are oldest first, the last
// being the current one.
type KeyState struct {
	Name     string         `json:"name"`
	Versions []VersionState `json:"versions"`
}

// VersionState describes one key version in State.
type VersionState struct {
	KeyVersionInfo
	Type    string   `json:"type"`
	Ops     []string `json:"ops"`
	Enabled bool     `json:"enabled"`
}

// ServerState describes one server in State.
type ServerState struct {
	ID                string `json:"id"`
	Location          string `json:"location"`
	KeyURL            string `json:"keyUrl"`
	Identity          string `json:"identity,omitempty"`
	ProvisioningState string `json:"provisioningState"`
}

// State returns a snapshot of every vault, key version and server.
func (e *Emulator) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := State{Vaults: []VaultState{}, Servers: []ServerState{}}
	for _, v := range e.vaults {
		vs := VaultState{Name: v.name, URL: v.ln.url, KeyIDHost: v.kidHost, Keys: []KeyState{}}
		for _, k := range v.keys {
			ks := KeyState{Name: k.name}
			for _, kv := range k.versions {
				ks.Versions = append(ks.Versions, VersionState{KeyVersionInfo: v.info(k.name, kv),
					Type: kv.kty, Ops: kv.ops, Enabled: kv.enabled})
			}
			vs.Keys = append(vs.Keys, ks)
		}
		slices.SortFunc(vs.Keys, func(a, b KeyState) int { return strings.Compare(a.Name, b.Name) })
		st.Vaults = append(st.Vaults, vs)
	}
	slices.SortFunc(st.Vaults, func(a, b VaultState) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range e.servers {
		ss := ServerState{ID: s.res.ID, Location: s.res.Location, KeyURL: s.keyURL(),
			ProvisioningState: e.provisioningState(s, false)}
		if c := s.cmk(); c != nil && c.KeyEncryptionKeyIdentity != nil {
			ss.Identity = c.KeyEncryptionKeyIdentity.UserAssignedIdentityResourceID
		}
		st.Servers = append(st.Servers, ss)
	}
	slices.SortFunc(st.Servers, func(a, b ServerState) int { return strings.Compare(a.ID, b.ID) })
	return st
}

func (e *Emulator) ctlState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, e.State())
}

func (e *Emulator) ctlAddVault(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(r, &in); err != nil {
		ctlError(w, err)
		return
	}
	if !validObjectName(in.Name) {
		ctlError(w, fmt.Errorf("add vault %q: %w: bad name", in.Name, ErrInvalid))
		return
	}
	v := e.AddVault(in.Name)
	writeJSON(w, http.StatusOK, map[string]string{"name": v.Name(), "url": v.URL()})
}

func (e *Emulator) ctlUpdateVault(w http.ResponseWriter, r *http.Request) {
	var in struct {
		KeyIDHost *string `json:"keyIdHost"`
	}
	if err := decode(r, &in); err != nil {
		ctlError(w, err)
		return
	}
	v := e.ctlVault(w, r)
	if v == nil {
		return
	}
	if in.KeyIDHost != nil {
		v.SetKeyIDHost(*in.KeyIDHost)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) ctlVault(w http.ResponseWriter, r *http.Request) *Vault {
	v := e.Vault(r.PathValue("vault"))
	if v == nil {
		ctlError(w, fmt.Errorf("vault %q: %w", r.PathValue("vault"), ErrNotFound))
	}
	return v
}

func (e *Emulator) ctlCreateKey(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Type      string    `json:"type"`
		Ops       []string  `json:"ops"`
		Disabled  bool      `json:"disabled"`
		NotBefore time.Time `json:"notBefore"`
		Expires   time.Time `json:"expires"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, &in); err != nil {
			ctlError(w, err)
			return
		}
	}
	v := e.ctlVault(w, r)
	if v == nil {
		return
	}
	info, err := v.CreateKey(r.PathValue("key"), KeyOptions{Type: in.Type, Ops: in.Ops,
		Disabled: in.Disabled, NotBefore: in.NotBefore, Expires: in.Expires})
	ctlResult(w, info, err)
}

func (e *Emulator) ctlRotateKey(w http.ResponseWriter, r *http.Request) {
	v := e.ctlVault(w, r)
	if v == nil {
		return
	}
	info, err := v.RotateKey(r.PathValue("key"))
	ctlResult(w, info, err)
}

func (e *Emulator) ctlUpdateVersion(w http.ResponseWriter, r *http.Request) {
	// An absent member leaves its attribute; null removes nbf or exp.
	var in struct {
		Enabled   *bool               `json:"enabled"`
		NotBefore optional[time.Time] `json:"notBefore"`
		Expires   optional[time.Time] `json:"expires"`
	}
	if err := decode(r, &in); err != nil {
		ctlError(w, err)
		return
	}
	v := e.ctlVault(w, r)
	if v == nil {
		return
	}
	name, version := r.PathValue("key"), r.PathValue("version")
	if version == "current" {
		version = ""
	}
	if in.Enabled != nil {
		if err := v.SetEnabled(name, version, *in.Enabled); err != nil {
			ctlError(w, err)
			return
		}
	}
	for _, t := range []struct {
		in  optional[time.Time]
		set func(name, version string, t time.Time) error
	}{{in.NotBefore, v.SetNotBefore}, {in.Expires, v.SetExpires}} {
		if !t.in.Set {
			continue
		}
		if err := t.set(name, version, t.in.V); err != nil { // zero when null
			ctlError(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) ctlDeleteKey(w http.ResponseWriter, r *http.Request) {
	v := e.ctlVault(w, r)
	if v == nil {
		return
	}
	ctlDone(w, v.DeleteKey(r.PathValue("key")))
}

func (e *Emulator) ctlPutServer(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Subscription  string `json:"subscription"`
		ResourceGroup string `json:"resourceGroup"`
		Name          string `json:"name"`
		Location      string `json:"location"`
		Identity      string `json:"identity"`
		KeyURL        string `json:"keyUrl"`
	}
	if err := decode(r, &in); err != nil {
		ctlError(w, err)
		return
	}
	id, err := e.PutServer(ServerSpec(in))
	ctlResult(w, map[string]string{"id": id}, err)
}

func (e *Emulator) ctlUpdateServer(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ID                string  `json:"id"`
		KeyURL            *string `json:"keyUrl"`
		ProvisioningState *string `json:"provisioningState"`
	}
	if err := decode(r, &in); err != nil {
		ctlError(w, err)
		return
	}
	if _, ok := e.ServerKeyURL(in.ID); !ok {
		ctlError(w, fmt.Errorf("server %q: %w", in.ID, ErrNotFound))
		return
	}
	if in.ProvisioningState != nil && *in.ProvisioningState == "" {
		ctlError(w, fmt.Errorf("server %q: %w: empty provisioningState", in.ID, ErrInvalid))
		return
	}
	var err error
	if in.KeyURL != nil {
		err = e.SetServerKeyURL(in.ID, *in.KeyURL)
	}
	if err == nil && in.ProvisioningState != nil {
		err = e.SetServerProvisioningState(in.ID, *in.ProvisioningState)
	}
	ctlDone(w, err)
}

func (e *Emulator) ctlDeleteServer(w http.ResponseWriter, r *http.Request) {
	ctlDone(w, e.DeleteServer(r.URL.Query().Get("id")))
}

// faultJSON is a Fault on the control surface; durations are Go duration
// strings ("1.5s").
type faultJSON struct {
	Service    string `json:"service"`
	Method     string `json:"method"`
	PathSuffix string `json:"pathSuffix"`
	Status     int    `json:"status"`
	Code       string `json:"code"`
	RetryAfter string `json:"retryAfter"`
	Times      int    `json:"times"`
	Latency    string `json:"latency"`
	Reset      bool   `json:"reset"`
	StaleReads int    `json:"staleReads"`

	ProvisioningState string `json:"provisioningState"`
	StateReads        int    `json:"stateReads"`
}

func (e *Emulator) ctlAddFault(w http.ResponseWriter, r *http.Request) {
	var in faultJSON
	if err := decode(r, &in); err != nil {
		ctlError(w, err)
		return
	}
	f := Fault{Service: in.Service, Method: in.Method, PathSuffix: in.PathSuffix,
		Status: in.Status, Code: in.Code, Times: in.Times, Reset: in.Reset,
		StaleReads: in.StaleReads, ProvisioningState: in.ProvisioningState, StateReads: in.StateReads}
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{in.RetryAfter, &f.RetryAfter}, {in.Latency, &f.Latency}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			ctlError(w, fmt.Errorf("add fault: %w: %v", ErrInvalid, err))
			return
		}
		*d.dst = v
	}
	if err := f.check(); err != nil {
		ctlError(w, fmt.Errorf("add fault: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"id": e.addFault(f)})
}

func (e *Emulator) ctlRemoveFault(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || !e.removeFault(id) {
		ctlError(w, fmt.Errorf("fault %q: %w", r.PathValue("id"), ErrNotFound))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) ctlThrottle(w http.ResponseWriter, r *http.Request) {
	var in *Throttle
	if err := decode(r, &in); err != nil {
		ctlError(w, err)
		return
	}
	e.SetThrottle(in)
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) ctlEvent(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Type    string `json:"type"`
		Vault   string `json:"vault"`
		Key     string `json:"key"`
		Version string `json:"version"`
		Schema  string `json:"schema"`
	}
	if err := decode(r, &in); err != nil {
		ctlError(w, err)
		return
	}
	v := e.Vault(in.Vault)
	if v == nil {
		ctlError(w, fmt.Errorf("vault %q: %w", in.Vault, ErrNotFound))
		return
	}
	vs, err := v.Versions(in.Key)
	if err != nil {
		ctlError(w, err)
		return
	}
	info := vs[len(vs)-1]
	if in.Version != "" {
		i := slices.IndexFunc(vs, func(k KeyVersionInfo) bool {
			return strings.EqualFold(k.Version, in.Version)
		})
		if i < 0 {
			ctlError(w, fmt.Errorf("key %q version %q: %w", in.Key, in.Version, ErrNotFound))
			return
		}
		info = vs[i]
	}
	if in.Type == "" {
		in.Type = KeyNewVersionCreated
	}
	if strings.EqualFold(in.Schema, "CloudEvents") {
		writeJSON(w, http.StatusOK, e.KeyCloudEvent(in.Type, info, v.Name()))
		return
	}
	writeJSON(w, http.StatusOK, e.KeyEvent(in.Type, info, v.Name()))
}
