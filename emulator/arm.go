package emulator

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// APIVersion is the only Fluid Relay api-version the emulator serves.
const APIVersion = "2022-06-01"

const (
	serverType    = "Microsoft.FluidRelay/fluidRelayServers"
	containerType = "Microsoft.FluidRelay/fluidRelayServers/fluidRelayContainers"
)

// Wire shapes of Microsoft.FluidRelay 2022-06-01 (fluidrelay.json).
type (
	serverResource struct {
		ID         string            `json:"id"`
		Name       string            `json:"name"`
		Type       string            `json:"type"`
		Location   string            `json:"location"`
		Tags       map[string]string `json:"tags,omitempty"`
		SystemData *systemData       `json:"systemData,omitempty"`
		Identity   *identity         `json:"identity,omitempty"`
		Properties serverProperties  `json:"properties"`
	}
	systemData struct {
		CreatedBy          string `json:"createdBy"`
		CreatedByType      string `json:"createdByType"`
		CreatedAt          string `json:"createdAt"`
		LastModifiedBy     string `json:"lastModifiedBy"`
		LastModifiedByType string `json:"lastModifiedByType"`
		LastModifiedAt     string `json:"lastModifiedAt"`
	}
	identity struct {
		Type                   string                   `json:"type"`
		PrincipalID            string                   `json:"principalId,omitempty"`
		TenantID               string                   `json:"tenantId,omitempty"`
		UserAssignedIdentities map[string]*userIdentity `json:"userAssignedIdentities,omitempty"`
	}
	userIdentity struct {
		PrincipalID string `json:"principalId,omitempty"`
		ClientID    string `json:"clientId,omitempty"`
	}
	serverProperties struct {
		FrsTenantID         string     `json:"frsTenantId,omitempty"`
		FluidRelayEndpoints *endpoints `json:"fluidRelayEndpoints,omitempty"`
		ProvisioningState   string     `json:"provisioningState,omitempty"`
		Encryption          *struct {
			CMK *cmk `json:"customerManagedKeyEncryption,omitempty"`
		} `json:"encryption,omitempty"`
		StorageSKU string `json:"storagesku,omitempty"`
	}
	endpoints struct {
		OrdererEndpoints []string `json:"ordererEndpoints"`
		StorageEndpoints []string `json:"storageEndpoints"`
		ServiceEndpoints []string `json:"serviceEndpoints"`
	}
	cmk struct {
		KeyEncryptionKeyIdentity *kekIdentity `json:"keyEncryptionKeyIdentity,omitempty"`
		KeyEncryptionKeyURL      string       `json:"keyEncryptionKeyUrl,omitempty"`
	}
	kekIdentity struct {
		IdentityType                   string `json:"identityType,omitempty"`
		UserAssignedIdentityResourceID string `json:"userAssignedIdentityResourceId,omitempty"`
	}
	serverUpdate struct {
		Location   *string           `json:"location"`
		Tags       map[string]string `json:"tags"`
		Identity   *identity         `json:"identity"`
		Properties *struct {
			Encryption json.RawMessage `json:"encryption"`
		} `json:"properties"`
	}
	serverList struct {
		Value    []serverResource `json:"value"`
		NextLink string           `json:"nextLink"`
	}
	containerResource struct {
		ID         string `json:"id"`
		Name       string `json:"name"`
		Type       string `json:"type"`
		Properties struct {
			FrsTenantID       string `json:"frsTenantId"`
			FrsContainerID    string `json:"frsContainerId"`
			ProvisioningState string `json:"provisioningState"`
			CreationTime      string `json:"creationTime"`
			LastAccessTime    string `json:"lastAccessTime"`
		} `json:"properties"`
	}
	serverKeys struct {
		Key1 string `json:"key1"`
		Key2 string `json:"key2"`
	}
)

// server is one Fluid Relay server; guarded by the emulator's lock.
type server struct {
	res        serverResource
	keys       serverKeys
	containers map[string]*containerResource
}

func (s *server) keyURL() string {
	if c := s.cmk(); c != nil {
		return c.KeyEncryptionKeyURL
	}
	return ""
}

func (s *server) cmk() *cmk {
	if e := s.res.Properties.Encryption; e != nil {
		return e.CMK
	}
	return nil
}

// armError is an ARM error answer.
type armError struct {
	status int
	code   string
	msg    string
}

func (e *armError) write(w http.ResponseWriter) { writeARMError(w, e.status, e.code, e.msg) }

func badRequest(code, format string, args ...any) *armError {
	return &armError{http.StatusBadRequest, code, fmt.Sprintf(format, args...)}
}

// writeARMError writes ARM's ErrorResponse body.
func writeARMError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// armRoute is a parsed Resource Manager path.
type armRoute struct {
	kind      string // "operations", "listSub", "listRG", "server", "listKeys", "regenerateKey", "containers", "container"
	sub, rg   string
	name      string
	container string
}

func (rt armRoute) serverID() string {
	return "/subscriptions/" + rt.sub + "/resourceGroups/" + rt.rg +
		"/providers/" + serverType + "/" + rt.name
}

// parseARMPath recognises the paths of the Fluid Relay API; segment names
// are case-insensitive, as in Resource Manager.
func parseARMPath(p string) (armRoute, bool) {
	s := strings.Split(strings.Trim(p, "/"), "/")
	eq := func(i int, want string) bool { return i < len(s) && strings.EqualFold(s[i], want) }
	if len(s) == 3 && eq(0, "providers") && eq(1, "Microsoft.FluidRelay") && eq(2, "operations") {
		return armRoute{kind: "operations"}, true
	}
	if len(s) < 5 || !eq(0, "subscriptions") || s[1] == "" {
		return armRoute{}, false
	}
	rt := armRoute{sub: s[1]}
	if len(s) == 5 && eq(2, "providers") && eq(3, "Microsoft.FluidRelay") && eq(4, "fluidRelayServers") {
		rt.kind = "listSub"
		return rt, true
	}
	if len(s) < 7 || !eq(2, "resourceGroups") || !eq(4, "providers") ||
		!eq(5, "Microsoft.FluidRelay") || !eq(6, "fluidRelayServers") || s[3] == "" {
		return armRoute{}, false
	}
	rt.rg = s[3]
	switch {
	case len(s) == 7:
		rt.kind = "listRG"
	case len(s) == 8:
		rt.kind, rt.name = "server", s[7]
	case len(s) == 9 && eq(8, "listKeys"):
		rt.kind, rt.name = "listKeys", s[7]
	case len(s) == 9 && eq(8, "regenerateKey"):
		rt.kind, rt.name = "regenerateKey", s[7]
	case len(s) == 9 && eq(8, "fluidRelayContainers"):
		rt.kind, rt.name = "containers", s[7]
	case len(s) == 10 && eq(8, "fluidRelayContainers"):
		rt.kind, rt.name, rt.container = "container", s[7], s[9]
	default:
		return armRoute{}, false
	}
	if rt.kind == "listRG" {
		return rt, true
	}
	return rt, rt.name != "" && (rt.kind != "container" || rt.container != "")
}

// serveARM answers Resource Manager: authentication, then faults, then
// the api-version, then throttling, then the resource provider.
func (e *Emulator) serveARM(w http.ResponseWriter, r *http.Request, body []byte) {
	w.Header().Set("X-Ms-Correlation-Request-Id", newGUID())
	c, te := checkToken(r, resourceARM, resourceARMAlt)
	switch te {
	case tokenMissing:
		writeARMError(w, http.StatusUnauthorized, "AuthenticationFailed",
			"Authentication failed. The 'Authorization' header is missing.")
		return
	case tokenInvalid:
		writeARMError(w, http.StatusUnauthorized, "InvalidAuthenticationToken",
			"The access token is invalid.")
		return
	case tokenExpired:
		writeARMError(w, http.StatusUnauthorized, "ExpiredAuthenticationToken",
			"The access token expiry UTC time is earlier than current UTC time.")
		return
	case tokenAudience:
		writeARMError(w, http.StatusUnauthorized, "InvalidAuthenticationTokenAudience",
			"The access token has been obtained for wrong audience or resource '"+c.Resource+
				"'. It should exactly match with one of the allowed audiences '"+resourceARM+
				"','"+resourceARMAlt+"'.")
		return
	}
	if e.applyFault(svcARM, w, r) {
		return
	}

	switch v, ok := r.URL.Query()["api-version"]; {
	case !ok || len(v) == 0 || v[0] == "":
		writeARMError(w, http.StatusBadRequest, "MissingApiVersionParameter",
			"The api-version query parameter (?api-version=) is required for all requests.")
		return
	case v[0] != APIVersion:
		writeARMError(w, http.StatusBadRequest, "InvalidApiVersionParameter",
			"The api-version '"+v[0]+"' is invalid. The supported versions are '"+APIVersion+"'.")
		return
	}

	rt, ok := parseARMPath(r.URL.Path)
	if !ok {
		writeARMError(w, http.StatusNotFound, "InvalidResourceType",
			"The resource type could not be found in the namespace 'Microsoft.FluidRelay' for api version '"+
				APIVersion+"'.")
		return
	}
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if wait, ok := e.admit(w, rt.sub, write); !ok {
		kind := "read"
		if write {
			kind = "write"
		}
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
		writeARMError(w, http.StatusTooManyRequests, "SubscriptionRequestsThrottled",
			"Number of '"+kind+"' requests for subscription '"+rt.sub+
				"' actually exceeded the limit. Please try again after some time.")
		return
	}
	e.route(w, r, rt, body, c.ClientID)
}

func (e *Emulator) route(w http.ResponseWriter, r *http.Request, rt armRoute, body []byte,
	caller string) {
	m := r.Method
	switch {
	case rt.kind == "operations" && m == http.MethodGet:
		writeJSON(w, http.StatusOK, operations)
	case (rt.kind == "listSub" || rt.kind == "listRG") && m == http.MethodGet:
		e.listServers(w, r, rt)
	case rt.kind == "server" && m == http.MethodGet:
		e.getServer(w, rt)
	case rt.kind == "server" && m == http.MethodPut:
		e.putServer(w, r, rt, body, caller)
	case rt.kind == "server" && m == http.MethodPatch:
		e.patchServer(w, r, rt, body, caller)
	case rt.kind == "server" && m == http.MethodDelete:
		e.deleteServer(w, rt)
	case rt.kind == "listKeys" && m == http.MethodPost:
		e.serverKeys(w, rt, nil)
	case rt.kind == "regenerateKey" && m == http.MethodPost:
		e.serverKeys(w, rt, body)
	case rt.kind == "containers" && m == http.MethodGet:
		e.listContainers(w, rt)
	case rt.kind == "container" && (m == http.MethodGet || m == http.MethodDelete):
		e.container(w, rt, m == http.MethodDelete)
	default:
		writeARMError(w, http.StatusMethodNotAllowed, "HttpMethodNotAllowed",
			"The HTTP method '"+m+"' is not supported for this resource.")
	}
}

func notFound(rt armRoute) *armError {
	return &armError{http.StatusNotFound, "ResourceNotFound",
		"The Resource '" + serverType + "/" + rt.name + "' under resource group '" + rt.rg +
			"' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"}
}

// lookup returns the server of rt; the caller holds the lock.
func (e *Emulator) lookup(rt armRoute) *server {
	return e.servers[strings.ToLower(rt.serverID())]
}

func (e *Emulator) getServer(w http.ResponseWriter, rt armRoute) {
	e.mu.Lock()
	s := e.lookup(rt)
	var res serverResource
	if s != nil {
		res = e.render(s, true)
	}
	e.mu.Unlock()
	if s == nil {
		notFound(rt).write(w)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// render returns a copy of s to answer with, showing the provisioningState
// a fault left. With read (a GET), the read is counted against that state
// and a pending stale read replaces the key URL. The caller holds the
// lock.
func (e *Emulator) render(s *server, read bool) serverResource {
	b, _ := json.Marshal(s.res)
	var res serverResource
	json.Unmarshal(b, &res)
	res.Properties.ProvisioningState = e.provisioningState(s, read)
	if !read {
		return res
	}
	if old, ok := e.staleURL(s.res.ID); ok && res.Properties.Encryption != nil &&
		res.Properties.Encryption.CMK != nil {
		res.Properties.Encryption.CMK.KeyEncryptionKeyURL = old
	}
	return res
}

func (e *Emulator) listServers(w http.ResponseWriter, r *http.Request, rt armRoute) {
	skip := 0
	if t := r.URL.Query().Get("$skiptoken"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			writeARMError(w, http.StatusBadRequest, "InvalidSkipToken", "The $skiptoken is invalid.")
			return
		}
		skip = n
	}
	prefix := strings.ToLower("/subscriptions/" + rt.sub + "/")
	if rt.kind == "listRG" {
		prefix = strings.ToLower("/subscriptions/" + rt.sub + "/resourceGroups/" + rt.rg + "/")
	}
	e.mu.Lock()
	var ids []string
	for id := range e.servers {
		if strings.HasPrefix(id, prefix) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	l := serverList{Value: []serverResource{}}
	for i := skip; i < len(ids) && i < skip+e.pageSize; i++ {
		l.Value = append(l.Value, e.render(e.servers[ids[i]], false))
	}
	if skip+e.pageSize < len(ids) {
		q := url.Values{"api-version": {APIVersion},
			"$skiptoken": {base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(skip + e.pageSize)))}}
		l.NextLink = "https://" + r.Host + r.URL.Path + "?" + q.Encode()
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, l)
}

func (e *Emulator) putServer(w http.ResponseWriter, r *http.Request, rt armRoute, body []byte,
	caller string) {
	var in serverResource
	if err := json.Unmarshal(body, &in); err != nil {
		badRequest("InvalidRequestContent", "The request content was invalid and could not be "+
			"deserialized: %v", err).write(w)
		return
	}
	if aerr := checkResource(&in); aerr != nil {
		aerr.write(w)
		return
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.lookup(rt)
	oldURL := ""
	if old != nil {
		oldURL = old.keyURL()
		if aerr := checkLocation(old, in.Location); aerr != nil {
			aerr.write(w)
			return
		}
		if aerr := e.checkCMKChange(old.cmk(), in.Identity, cmkOf(&in.Properties)); aerr != nil {
			aerr.write(w)
			return
		}
	} else if c := cmkOf(&in.Properties); c != nil {
		if aerr := e.checkCMK(in.Identity, c, "", false); aerr != nil {
			aerr.write(w)
			return
		}
	}

	s := e.upsert(rt, in, "Application", caller)
	e.noteWrite(r, s.res.ID, oldURL, old != nil && s.keyURL() != oldURL)
	writeJSON(w, http.StatusOK, e.render(s, false))
}

// upsert creates or replaces the server of rt from in, keeping what the
// service owns (tenant, endpoints, access keys, containers, creation). The
// caller holds the lock.
func (e *Emulator) upsert(rt armRoute, in serverResource, byType, by string) *server {
	id := rt.serverID()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	s := e.servers[strings.ToLower(id)]
	if s == nil {
		s = &server{
			keys:       serverKeys{Key1: randomHex(32), Key2: randomHex(32)},
			containers: map[string]*containerResource{},
		}
		s.res.SystemData = &systemData{CreatedBy: by, CreatedByType: byType, CreatedAt: now}
		s.res.Properties.FrsTenantID = newGUID()
		loc := strings.ToLower(strings.ReplaceAll(in.Location, " ", ""))
		s.res.Properties.FluidRelayEndpoints = &endpoints{
			OrdererEndpoints: []string{"https://" + loc + ".fluidrelay.azure.com"},
			StorageEndpoints: []string{"https://" + loc + ".fluidrelay.azure.com"},
			ServiceEndpoints: []string{"https://" + loc + ".fluidrelay.azure.com"},
		}
		e.servers[strings.ToLower(id)] = s
	} else {
		id = s.res.ID
	}
	s.res.ID, s.res.Name, s.res.Type = id, id[strings.LastIndexByte(id, '/')+1:], serverType
	s.res.Location, s.res.Tags = in.Location, in.Tags
	prev := s.res.Identity
	s.res.Identity = completeIdentity(in.Identity)
	if prev != nil && s.res.Identity != nil && s.res.Identity.PrincipalID != "" &&
		prev.PrincipalID != "" {
		s.res.Identity.PrincipalID = prev.PrincipalID
	}
	s.res.SystemData.LastModifiedBy, s.res.SystemData.LastModifiedByType = by, byType
	s.res.SystemData.LastModifiedAt = now
	s.res.Properties.ProvisioningState = "Succeeded"
	delete(e.pending, strings.ToLower(id))
	s.res.Properties.Encryption = in.Properties.Encryption
	if in.Properties.StorageSKU != "" || s.res.Properties.StorageSKU == "" {
		s.res.Properties.StorageSKU = in.Properties.StorageSKU
	}
	return s
}

// completeIdentity fills in the read-only fields the service reports.
func completeIdentity(in *identity) *identity {
	if in == nil {
		return nil
	}
	out := &identity{Type: in.Type}
	if in.Type == "None" {
		return out
	}
	out.TenantID = TenantID
	if strings.Contains(in.Type, "SystemAssigned") {
		out.PrincipalID = newGUID()
	}
	if len(in.UserAssignedIdentities) > 0 {
		out.UserAssignedIdentities = map[string]*userIdentity{}
		for id := range in.UserAssignedIdentities {
			out.UserAssignedIdentities[id] = &userIdentity{PrincipalID: stableGUID("p" + id),
				ClientID: stableGUID("c" + id)}
		}
	}
	return out
}

// stableGUID derives a GUID from s, so an identity keeps its IDs.
func stableGUID(s string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(s)))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func cmkOf(p *serverProperties) *cmk {
	if p.Encryption == nil {
		return nil
	}
	return p.Encryption.CMK
}

var identityTypes = map[string]bool{"SystemAssigned": true, "UserAssigned": true,
	"SystemAssigned, UserAssigned": true, "None": true}

// checkResource validates a PUT body against the swagger.
func checkResource(in *serverResource) *armError {
	if strings.TrimSpace(in.Location) == "" {
		return badRequest("LocationRequired", "The location property is required for this definition.")
	}
	if in.Identity != nil && !identityTypes[in.Identity.Type] {
		return badRequest("InvalidRequestContent", "The identity type '%s' is invalid; want one "+
			"of SystemAssigned, UserAssigned, 'SystemAssigned, UserAssigned', None.", in.Identity.Type)
	}
	switch in.Properties.StorageSKU {
	case "", "standard", "basic":
	default:
		return badRequest("InvalidRequestContent", "The storagesku '%s' is invalid; want "+
			"standard or basic.", in.Properties.StorageSKU)
	}
	in.Properties.FrsTenantID, in.Properties.FluidRelayEndpoints = "", nil
	return nil
}

func checkLocation(s *server, loc string) *armError {
	norm := func(l string) string { return strings.ToLower(strings.ReplaceAll(l, " ", "")) }
	if norm(loc) == norm(s.res.Location) {
		return nil
	}
	return badRequest("InvalidResourceLocation", "The resource '%s' already exists in location "+
		"'%s' in resource group. A resource with the same name cannot be created in location '%s'.",
		s.res.Name, s.res.Location, loc)
}

func (e *Emulator) patchServer(w http.ResponseWriter, r *http.Request, rt armRoute, body []byte,
	caller string) {
	var up serverUpdate
	if err := json.Unmarshal(body, &up); err != nil {
		badRequest("InvalidRequestContent", "The request content was invalid and could not be "+
			"deserialized: %v", err).write(w)
		return
	}
	if up.Identity != nil && !identityTypes[up.Identity.Type] {
		badRequest("InvalidRequestContent", "The identity type '%s' is invalid.",
			up.Identity.Type).write(w)
		return
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.lookup(rt)
	if s == nil {
		notFound(rt).write(w)
		return
	}
	if up.Location != nil {
		if aerr := checkLocation(s, *up.Location); aerr != nil {
			aerr.write(w)
			return
		}
	}

	// The updated resource, as a PUT would carry it.
	next := e.render(s, false)
	if up.Tags != nil {
		next.Tags = up.Tags
	}
	if up.Identity != nil {
		next.Identity = up.Identity
	}
	if up.Properties != nil {
		c, aerr := mergeEncryption(s.cmk(), up.Properties.Encryption)
		if aerr != nil {
			aerr.write(w)
			return
		}
		if c != nil {
			next.Properties.Encryption = &struct {
				CMK *cmk `json:"customerManagedKeyEncryption,omitempty"`
			}{CMK: c}
		}
	}
	if up.Identity != nil || (up.Properties != nil && len(up.Properties.Encryption) > 0) {
		if aerr := e.checkCMKChange(s.cmk(), next.Identity, cmkOf(&next.Properties)); aerr != nil {
			aerr.write(w)
			return
		}
	}

	oldURL := s.keyURL()
	s = e.upsert(rt, next, "Application", caller)
	e.noteWrite(r, s.res.ID, oldURL, s.keyURL() != oldURL)
	writeJSON(w, http.StatusOK, e.render(s, false))
}

// mergeEncryption applies a PATCH's properties.encryption to the current
// customer-managed key settings. Removing them is refused; adding them is
// refused by checkCMKChange.
func mergeEncryption(cur *cmk, raw json.RawMessage) (*cmk, *armError) {
	removed := badRequest("CustomerManagedKeyCannotBeRemoved", "Customer-managed key "+
		"encryption cannot be removed from an existing Fluid Relay server.")
	if len(raw) == 0 {
		return cur, nil
	}
	if string(raw) == "null" {
		if cur != nil {
			return nil, removed
		}
		return nil, nil
	}
	var enc struct {
		CMK json.RawMessage `json:"customerManagedKeyEncryption"`
	}
	if err := json.Unmarshal(raw, &enc); err != nil {
		return nil, badRequest("InvalidRequestContent", "properties.encryption is invalid: %v", err)
	}
	if len(enc.CMK) == 0 {
		return cur, nil
	}
	if string(enc.CMK) == "null" {
		if cur != nil {
			return nil, removed
		}
		return nil, nil
	}
	var up struct {
		KeyEncryptionKeyIdentity *kekIdentity `json:"keyEncryptionKeyIdentity"`
		KeyEncryptionKeyURL      *string      `json:"keyEncryptionKeyUrl"`
	}
	if err := json.Unmarshal(enc.CMK, &up); err != nil {
		return nil, badRequest("InvalidRequestContent",
			"properties.encryption.customerManagedKeyEncryption is invalid: %v", err)
	}
	next := &cmk{}
	if cur != nil {
		*next = *cur
		if cur.KeyEncryptionKeyIdentity != nil {
			id := *cur.KeyEncryptionKeyIdentity
			next.KeyEncryptionKeyIdentity = &id
		}
	}
	if ki := up.KeyEncryptionKeyIdentity; ki != nil {
		if next.KeyEncryptionKeyIdentity == nil {
			next.KeyEncryptionKeyIdentity = &kekIdentity{}
		}
		if ki.IdentityType != "" {
			next.KeyEncryptionKeyIdentity.IdentityType = ki.IdentityType
		}
		if ki.UserAssignedIdentityResourceID != "" {
			next.KeyEncryptionKeyIdentity.UserAssignedIdentityResourceID = ki.UserAssignedIdentityResourceID
		}
	}
	if u := up.KeyEncryptionKeyURL; u != nil {
		if *u == "" && cur != nil {
			return nil, removed
		}
		next.KeyEncryptionKeyURL = *u
	}
	return next, nil
}

// checkCMKChange applies the rules of changing an existing server's
// customer-managed key settings from cur to next. The caller holds the
// lock.
func (e *Emulator) checkCMKChange(cur *cmk, id *identity, next *cmk) *armError {
	switch {
	case cur == nil && next == nil:
		return nil
	case cur == nil:
		return badRequest("CustomerManagedKeyCannotBeAdded", "Customer-managed key encryption "+
			"can only be chosen when a Fluid Relay server is created.")
	case next == nil || next.KeyEncryptionKeyURL == "":
		return badRequest("CustomerManagedKeyCannotBeRemoved", "Customer-managed key encryption "+
			"cannot be removed from an existing Fluid Relay server.")
	}
	changed := !strings.EqualFold(cur.KeyEncryptionKeyURL, next.KeyEncryptionKeyURL)
	return e.checkCMK(id, next, cur.KeyEncryptionKeyURL, changed)
}

// checkCMK applies Fluid Relay's customer-managed key rules to c under
// the server identity id; with checkPrev, the version in prev must still
// be usable. The caller holds the lock.
func (e *Emulator) checkCMK(id *identity, c *cmk, prev string, checkPrev bool) *armError {
	ki := c.KeyEncryptionKeyIdentity
	if ki == nil || ki.IdentityType != "UserAssigned" || ki.UserAssignedIdentityResourceID == "" {
		return badRequest("UserAssignedIdentityRequired", "Customer-managed key encryption "+
			"requires keyEncryptionKeyIdentity.identityType 'UserAssigned' and a "+
			"userAssignedIdentityResourceId.")
	}
	// Only a user-assigned identity is accepted: "SystemAssigned,
	// UserAssigned" is refused like "SystemAssigned".
	// https://learn.microsoft.com/azure/azure-fluid-relay/concepts/customer-managed-keys
	if id == nil || id.Type != "UserAssigned" {
		got := "none"
		if id != nil {
			got = "'" + id.Type + "'"
		}
		return badRequest("UserAssignedIdentityRequired", "Customer-managed key encryption "+
			"requires identity.type 'UserAssigned', got %s.", got)
	}
	found := false
	for uid := range id.UserAssignedIdentities {
		found = found || strings.EqualFold(uid, ki.UserAssignedIdentityResourceID)
	}
	if !found {
		return badRequest("UserAssignedIdentityNotFound", "The identity '%s' is not one of the "+
			"server's identity.userAssignedIdentities.", ki.UserAssignedIdentityResourceID)
	}

	kv, aerr := e.resolveKey(c.KeyEncryptionKeyURL, "")
	if aerr != nil {
		return aerr
	}
	u := c.KeyEncryptionKeyURL
	now := time.Now()
	switch {
	case kv.kty != "RSA" && kv.kty != "RSA-HSM":
		return badRequest("KeyVaultKeyTypeNotSupported", "The key '%s' is of type %s; "+
			"customer-managed keys must be RSA or RSA-HSM.", u, kv.kty)
	case !kv.enabled:
		return badRequest("KeyVaultKeyDisabled", "The key '%s' is disabled.", u)
	case !kv.nbf.IsZero() && now.Before(kv.nbf):
		return badRequest("KeyVaultKeyNotYetValid", "The key '%s' is not valid before %s.",
			u, kv.nbf.UTC().Format(time.RFC3339))
	case !kv.exp.IsZero() && !now.Before(kv.exp):
		return badRequest("KeyVaultKeyExpired", "The key '%s' expired at %s.",
			u, kv.exp.UTC().Format(time.RFC3339))
	case !hasOps(kv.ops, "wrapKey", "unwrapKey"):
		return badRequest("KeyVaultKeyOperationsNotPermitted", "The key '%s' must permit the "+
			"wrapKey and unwrapKey operations.", u)
	}

	if !checkPrev || prev == "" {
		return nil
	}
	pv, aerr := e.resolveKey(prev, "Previous")
	if aerr != nil {
		return aerr
	}
	switch {
	case !pv.enabled:
		return badRequest("PreviousKeyVersionDisabled", "The key version in use, '%s', is "+
			"disabled; the server cannot move off a key it can no longer unwrap.", prev)
	case !pv.exp.IsZero() && !now.Before(pv.exp):
		return badRequest("PreviousKeyVersionExpired", "The key version in use, '%s', has "+
			"expired; the server cannot move off a key it can no longer unwrap.", prev)
	}
	return nil
}

func hasOps(ops []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, op := range ops {
			found = found || op == w
		}
		if !found {
			return false
		}
	}
	return true
}

// resolveKey finds the key version a key URL names (the current version
// for a versionless URL). Codes are prefixed with prefix ("" or
// "Previous"). The caller holds the lock.
func (e *Emulator) resolveKey(raw, prefix string) (*keyVersion, *armError) {
	u, err := url.Parse(raw)
	segs := []string{}
	if err == nil {
		segs = strings.Split(strings.Trim(u.Path, "/"), "/")
	}
	// A query, a fragment (even an empty "?" or "#") or user info makes
	// it something other than a key identifier.
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil ||
		strings.ContainsAny(raw, "?#") || len(segs) < 2 || len(segs) > 3 ||
		!strings.EqualFold(segs[0], "keys") || segs[1] == "" {
		if prefix != "" {
			return nil, badRequest(prefix+"KeyVersionNotFound", "The key URL in use, '%s', is "+
				"not a Key Vault key URL.", raw)
		}
		return nil, badRequest("InvalidKeyEncryptionKeyUrl", "The keyEncryptionKeyUrl '%s' is "+
			"not a Key Vault key URL: want https://{vault}/keys/{name}[/{version}].", raw)
	}
	v := e.vaultByHost(u.Host)
	if v == nil {
		code := "KeyVaultNotFound"
		if prefix != "" {
			code = prefix + "KeyVersionNotFound"
		}
		return nil, badRequest(code, "The key vault '%s' of key URL '%s' could not be found.",
			u.Host, raw)
	}
	version := ""
	if len(segs) == 3 {
		version = segs[2]
	}
	kv, err := v.find(segs[1], version)
	if err != nil {
		code := "KeyVaultKeyNotFound"
		if prefix != "" {
			code = prefix + "KeyVersionNotFound"
		}
		return nil, badRequest(code, "The key '%s' was not found in key vault '%s'.", raw, v.name)
	}
	return kv, nil
}

// vaultByHost finds a vault by its endpoint (loopback address and port),
// by the host its kids name (SetKeyIDHost) or by the public name
// {vault}.vault.azure.net. The caller holds the lock.
func (e *Emulator) vaultByHost(host string) *Vault {
	for _, v := range e.vaults {
		if v.kidHost != "" && strings.EqualFold(v.kidHost, host) {
			return v
		}
	}
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.ToLower(h)
	if name, ok := strings.CutSuffix(h, ".vault.azure.net"); ok && (port == "" || port == "443") {
		return e.vaults[name]
	}
	ip := net.ParseIP(h)
	if h == "localhost" || ip != nil && ip.IsLoopback() {
		return e.ports[port]
	}
	return nil
}

func (e *Emulator) deleteServer(w http.ResponseWriter, rt armRoute) {
	e.mu.Lock()
	s := e.lookup(rt)
	if s != nil {
		delete(e.servers, strings.ToLower(s.res.ID))
	}
	e.mu.Unlock()
	if s == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (e *Emulator) serverKeys(w http.ResponseWriter, rt armRoute, regen []byte) {
	var p struct {
		KeyName string `json:"keyName"`
	}
	if regen != nil {
		if err := json.Unmarshal(regen, &p); err != nil || (p.KeyName != "key1" && p.KeyName != "key2") {
			badRequest("InvalidRequestContent", "keyName must be key1 or key2.").write(w)
			return
		}
	}
	e.mu.Lock()
	s := e.lookup(rt)
	var k serverKeys
	if s != nil {
		switch p.KeyName {
		case "key1":
			s.keys.Key1 = randomHex(32)
		case "key2":
			s.keys.Key2 = randomHex(32)
		}
		k = s.keys
	}
	e.mu.Unlock()
	if s == nil {
		notFound(rt).write(w)
		return
	}
	writeJSON(w, http.StatusOK, k)
}

func (e *Emulator) listContainers(w http.ResponseWriter, rt armRoute) {
	e.mu.Lock()
	s := e.lookup(rt)
	var out struct {
		Value    []containerResource `json:"value"`
		NextLink string              `json:"nextLink"`
	}
	out.Value = []containerResource{}
	if s != nil {
		for _, c := range s.containers {
			out.Value = append(out.Value, *c)
		}
	}
	e.mu.Unlock()
	if s == nil {
		notFound(rt).write(w)
		return
	}
	sort.Slice(out.Value, func(i, j int) bool { return out.Value[i].ID < out.Value[j].ID })
	writeJSON(w, http.StatusOK, out)
}

func (e *Emulator) container(w http.ResponseWriter, rt armRoute, del bool) {
	e.mu.Lock()
	s := e.lookup(rt)
	var c *containerResource
	if s != nil {
		c = s.containers[strings.ToLower(rt.container)]
		if c != nil && del {
			delete(s.containers, strings.ToLower(rt.container))
		}
	}
	e.mu.Unlock()
	switch {
	case del && c == nil:
		w.WriteHeader(http.StatusNoContent)
	case del:
		w.WriteHeader(http.StatusOK)
	case c == nil:
		writeARMError(w, http.StatusNotFound, "ResourceNotFound", "The Resource '"+containerType+
			"/"+rt.container+"' under resource group '"+rt.rg+"' was not found.")
	default:
		writeJSON(w, http.StatusOK, c)
	}
}

var operations = map[string]any{"value": []map[string]any{
	operation("Read", "Get/List fluid relay server resources", "Read fluid relay server"),
	operation("Write", "Create/Update fluid relay server resources", "Write fluid relay server"),
	operation("Delete", "Delete fluid relay server resources", "Delete fluid relay server"),
}, "nextLink": nil}

func operation(verb, op, desc string) map[string]any {
	return map[string]any{
		"name":         serverType + "/" + verb,
		"isDataAction": false,
		"display": map[string]string{"provider": "Microsoft.FluidRelay",
			"resource": "fluidRelayServers", "operation": op, "description": desc},
	}
}

// ServerSpec seeds a Fluid Relay server.
type ServerSpec struct {
	Subscription  string // zero: DefaultSubscription
	ResourceGroup string // zero: DefaultResourceGroup
	Name          string // required
	Location      string // zero: DefaultLocation
	// Identity is the user-assigned identity resource ID used for the key;
	// zero with a KeyURL: DefaultIdentity(Subscription, ResourceGroup).
	Identity string
	KeyURL   string // "" = no CMK
}

// DefaultIdentity is the identity ServerSpec uses when it names none.
func DefaultIdentity(sub, rg string) string {
	return "/subscriptions/" + sub + "/resourceGroups/" + rg +
		"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/fluid-cmk"
}

// ServerID returns the ARM resource ID of a server.
func ServerID(sub, rg, name string) string {
	return armRoute{sub: sub, rg: rg, name: name}.serverID()
}

// PutServer creates or replaces a server without any validation, as if it
// had been created earlier. It returns the server's ARM resource ID.
func (e *Emulator) PutServer(s ServerSpec) (string, error) {
	if s.Subscription == "" {
		s.Subscription = DefaultSubscription
	}
	if s.ResourceGroup == "" {
		s.ResourceGroup = DefaultResourceGroup
	}
	if s.Location == "" {
		s.Location = DefaultLocation
	}
	if !validObjectName(s.Name) {
		return "", fmt.Errorf("put server %q: %w: bad name", s.Name, ErrInvalid)
	}
	if s.Identity == "" && s.KeyURL != "" {
		s.Identity = DefaultIdentity(s.Subscription, s.ResourceGroup)
	}

	in := serverResource{Location: s.Location, Properties: serverProperties{StorageSKU: "standard"}}
	if s.Identity != "" {
		in.Identity = &identity{Type: "UserAssigned",
			UserAssignedIdentities: map[string]*userIdentity{s.Identity: {}}}
	}
	if s.KeyURL != "" {
		in.Properties.Encryption = &struct {
			CMK *cmk `json:"customerManagedKeyEncryption,omitempty"`
		}{CMK: &cmk{KeyEncryptionKeyURL: s.KeyURL, KeyEncryptionKeyIdentity: &kekIdentity{
			IdentityType: "UserAssigned", UserAssignedIdentityResourceID: s.Identity}}}
	}
	rt := armRoute{sub: s.Subscription, rg: s.ResourceGroup, name: s.Name}
	e.mu.Lock()
	defer e.mu.Unlock()
	srv := e.upsert(rt, in, "User", "seed")
	return srv.res.ID, nil
}

// ServerKeyURL returns a server's key URL ("" without a customer-managed
// key) and whether the server exists.
func (e *Emulator) ServerKeyURL(id string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.servers[strings.ToLower(id)]
	if !ok {
		return "", false
	}
	return s.keyURL(), true
}

// SetServerKeyURL changes a server's key URL behind the product's back,
// without validation, as an IaC tool reverting it would. A server without
// a customer-managed key gets one, using its first user-assigned identity.
func (e *Emulator) SetServerKeyURL(id, keyURL string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.servers[strings.ToLower(id)]
	if !ok {
		return fmt.Errorf("set server %q key URL: %w", id, ErrNotFound)
	}
	if c := s.cmk(); c != nil {
		c.KeyEncryptionKeyURL = keyURL
		return nil
	}
	ki := &kekIdentity{IdentityType: "UserAssigned"}
	if s.res.Identity != nil {
		for uid := range s.res.Identity.UserAssignedIdentities {
			ki.UserAssignedIdentityResourceID = uid
		}
	}
	s.res.Properties.Encryption = &struct {
		CMK *cmk `json:"customerManagedKeyEncryption,omitempty"`
	}{CMK: &cmk{KeyEncryptionKeyURL: keyURL, KeyEncryptionKeyIdentity: ki}}
	return nil
}

// SetServerProvisioningState sets the provisioningState a server reports
// ("Updating", "Failed", …) until its next write or the next call, as an
// update in flight or one that failed would leave it.
func (e *Emulator) SetServerProvisioningState(id, state string) error {
	if state == "" {
		return fmt.Errorf("set server %q provisioning state: %w: empty state", id, ErrInvalid)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.servers[strings.ToLower(id)]
	if !ok {
		return fmt.Errorf("set server %q provisioning state: %w", id, ErrNotFound)
	}
	s.res.Properties.ProvisioningState = state
	delete(e.pending, strings.ToLower(s.res.ID))
	return nil
}

// DeleteServer deletes a server.
func (e *Emulator) DeleteServer(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.servers[strings.ToLower(id)]; !ok {
		return fmt.Errorf("delete server %q: %w", id, ErrNotFound)
	}
	delete(e.servers, strings.ToLower(id))
	return nil
}

// AddContainer seeds a Fluid Relay container on a server and returns its
// ARM resource ID.
func (e *Emulator) AddContainer(serverID, name string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.servers[strings.ToLower(serverID)]
	if !ok {
		return "", fmt.Errorf("add container %q: server %q: %w", name, serverID, ErrNotFound)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	c := &containerResource{ID: s.res.ID + "/fluidRelayContainers/" + name, Name: name,
		Type: containerType}
	c.Properties.FrsTenantID = s.res.Properties.FrsTenantID
	c.Properties.FrsContainerID = newGUID()
	c.Properties.ProvisioningState = "Succeeded"
	c.Properties.CreationTime, c.Properties.LastAccessTime = now, now
	s.containers[strings.ToLower(name)] = c
	return c.ID, nil
}
