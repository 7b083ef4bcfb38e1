package emulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Vault is one emulated Key Vault, served on its own loopback HTTPS port.
// Its keys are guarded by the emulator's lock; a Vault is safe for
// concurrent use.
type Vault struct {
	e    *Emulator
	name string
	ln   *listener
	keys map[string]*key // by lower-case name
	// kidHost is the host kids name; "" names the vault's own endpoint.
	kidHost string
}

type key struct {
	name     string
	versions []*keyVersion // oldest first; created strictly increasing
}

type keyVersion struct {
	version  string
	kty      string
	size     int
	crv      string
	ops      []string
	enabled  bool
	nbf, exp time.Time
	created  time.Time
	updated  time.Time
	tags     map[string]string
	n, x, y  []byte
}

// KeyOptions describe a key version to create.
type KeyOptions struct {
	Type      string    // "RSA" (zero), "RSA-HSM", "EC", "EC-HSM"
	Ops       []string  // zero: all RSA ops incl. wrapKey/unwrapKey (EC: sign/verify)
	Disabled  bool      // create the version disabled
	NotBefore time.Time // zero: none
	Expires   time.Time // zero: none
}

// KeyVersionInfo describes a created key version.
type KeyVersionInfo struct {
	// KID is https://127.0.0.1:P/keys/{name}/{version}, or the host set
	// with SetKeyIDHost in place of 127.0.0.1:P.
	KID     string    `json:"kid"`
	Name    string    `json:"name"`
	Version string    `json:"version"` // 32 lower-case hex digits
	Created time.Time `json:"created"`
	// NotBefore and Expires are zero when the version has none.
	NotBefore time.Time `json:"notBefore,omitzero"`
	Expires   time.Time `json:"expires,omitzero"`
}

// Errors of the Go seeding API. Test with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid argument")
)

// AddVault creates the vault name, listening on a new loopback HTTPS port,
// or returns the existing vault of that name (names are case-insensitive).
// It panics if no loopback port can be opened.
func (e *Emulator) AddVault(name string) *Vault {
	e.mu.Lock()
	defer e.mu.Unlock()
	if v, ok := e.vaults[strings.ToLower(name)]; ok {
		return v
	}
	v := &Vault{e: e, name: name, keys: map[string]*key{}}
	ln, err := e.listen(true, e.handler(svcKeyVault, v.serve))
	if err != nil {
		panic(fmt.Sprintf("emulator: add vault %q: %v", name, err))
	}
	v.ln = ln
	e.vaults[strings.ToLower(name)] = v
	e.ports[portOf(ln.host)] = v
	if e.closed {
		ln.srv.Close()
	}
	return v
}

// Vault returns the vault name, or nil.
func (e *Emulator) Vault(name string) *Vault {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.vaults[strings.ToLower(name)]
}

// URL is the vault's endpoint: https://127.0.0.1:P.
func (v *Vault) URL() string { return v.ln.url }

// Name is the vault's name as given to AddVault.
func (v *Vault) Name() string { return v.name }

// SetKeyIDHost makes the vault name host instead of its own endpoint in
// the kids it answers (key bundles, list items, KeyVersionInfo.KID and so
// events), as a vault reached through an alias or a private endpoint
// names its canonical host; "" restores the endpoint. Fluid Relay's
// checks find the vault by either host.
func (v *Vault) SetKeyIDHost(host string) {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	v.kidHost = host
}

// keyIDBase is the scheme and host kids start with. The caller holds the
// lock.
func (v *Vault) keyIDBase() string {
	if v.kidHost != "" {
		return "https://" + v.kidHost
	}
	return v.ln.url
}

// ResourceID is the vault's ARM resource ID, the topic of its events.
func (v *Vault) ResourceID() string { return vaultResourceID(v.name) }

func vaultResourceID(name string) string {
	return "/subscriptions/" + DefaultSubscription + "/resourceGroups/" + DefaultResourceGroup +
		"/providers/Microsoft.KeyVault/vaults/" + name
}

// CreateKey creates the key or a new version of it, as POST
// /keys/{name}/create does, and returns the new version.
func (v *Vault) CreateKey(name string, o KeyOptions) (KeyVersionInfo, error) {
	spec := versionSpec{kty: o.Type, ops: o.Ops, enabled: !o.Disabled, nbf: o.NotBefore,
		exp: o.Expires}
	if spec.kty == "" {
		spec.kty = "RSA"
	}
	if err := spec.complete(); err != nil {
		return KeyVersionInfo{}, fmt.Errorf("create key %q: %w: %s", name, ErrInvalid, err)
	}
	if !validObjectName(name) {
		return KeyVersionInfo{}, fmt.Errorf("create key %q: %w: bad name", name, ErrInvalid)
	}
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	kv := v.addVersion(name, spec)
	return v.info(name, kv), nil
}

// RotateKey creates a new version of an existing key with the current
// version's type and operations, as POST /keys/{name}/rotate does.
func (v *Vault) RotateKey(name string) (KeyVersionInfo, error) {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	kv, err := v.rotate(name)
	if err != nil {
		return KeyVersionInfo{}, fmt.Errorf("rotate key %q: %w", name, err)
	}
	return v.info(name, kv), nil
}

// SetEnabled enables or disables one version ("" names the current one).
func (v *Vault) SetEnabled(name, version string, enabled bool) error {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	kv, err := v.find(name, version)
	if err != nil {
		return fmt.Errorf("set key %q version %q enabled: %w", name, version, err)
	}
	kv.enabled, kv.updated = enabled, v.e.stamp()
	return nil
}

// SetExpires sets one version's expiry ("" names the current version; a
// zero exp removes the expiry).
func (v *Vault) SetExpires(name, version string, exp time.Time) error {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	kv, err := v.find(name, version)
	if err != nil {
		return fmt.Errorf("set key %q version %q expiry: %w", name, version, err)
	}
	kv.exp, kv.updated = exp, v.e.stamp()
	return nil
}

// SetNotBefore sets one version's activation time ("" names the current
// version; a zero nbf removes it).
func (v *Vault) SetNotBefore(name, version string, nbf time.Time) error {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	kv, err := v.find(name, version)
	if err != nil {
		return fmt.Errorf("set key %q version %q activation: %w", name, version, err)
	}
	kv.nbf, kv.updated = nbf, v.e.stamp()
	return nil
}

// DeleteKey deletes the key and all its versions.
func (v *Vault) DeleteKey(name string) error {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	if _, ok := v.keys[strings.ToLower(name)]; !ok {
		return fmt.Errorf("delete key %q: %w", name, ErrNotFound)
	}
	delete(v.keys, strings.ToLower(name))
	return nil
}

// Versions returns every version of a key, oldest first.
func (v *Vault) Versions(name string) ([]KeyVersionInfo, error) {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	k, ok := v.keys[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("list key %q versions: %w", name, ErrNotFound)
	}
	var out []KeyVersionInfo
	for _, kv := range k.versions {
		out = append(out, v.info(k.name, kv))
	}
	return out, nil
}

// stamp is the current time at Key Vault's precision, one second.
func (e *Emulator) stamp() time.Time { return time.Unix(time.Now().Unix(), 0) }

// versionSpec is what a new version is made of.
type versionSpec struct {
	kty      string
	size     int
	crv      string
	ops      []string
	enabled  bool
	nbf, exp time.Time
	tags     map[string]string
}

var (
	rsaOps   = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	ecOps    = []string{"sign", "verify"}
	knownOps = append(slices.Clone(rsaOps), "import", "export")
)

// complete validates the spec and fills in defaults.
func (s *versionSpec) complete() error {
	switch s.kty {
	case "RSA", "RSA-HSM":
		if s.size == 0 {
			s.size = 2048
		}
		if s.size != 2048 && s.size != 3072 && s.size != 4096 {
			return fmt.Errorf("key_size %d is not one of 2048, 3072, 4096", s.size)
		}
		if s.ops == nil {
			s.ops = rsaOps
		}
	case "EC", "EC-HSM":
		if s.crv == "" {
			s.crv = "P-256"
		}
		if curveSize(s.crv) == 0 {
			return fmt.Errorf("crv %q is not one of P-256, P-256K, P-384, P-521", s.crv)
		}
		if s.ops == nil {
			s.ops = ecOps
		}
	case "oct", "oct-HSM":
		return fmt.Errorf("kty %q is only supported by Managed HSM", s.kty)
	default:
		return fmt.Errorf("kty %q is not one of RSA, RSA-HSM, EC, EC-HSM", s.kty)
	}
	for _, op := range s.ops {
		if !slices.Contains(knownOps, op) {
			return fmt.Errorf("key_ops value %q is invalid", op)
		}
	}
	s.ops = slices.Clone(s.ops)
	return nil
}

func curveSize(crv string) int {
	switch crv {
	case "P-256", "P-256K":
		return 32
	case "P-384":
		return 48
	case "P-521":
		return 66
	}
	return 0
}

// addVersion creates a version of name, creating the key if needed. The
// caller holds the lock. Created times of one key are strictly increasing,
// at least a second apart, so "newest" is never ambiguous.
func (v *Vault) addVersion(name string, s versionSpec) *keyVersion {
	k, ok := v.keys[strings.ToLower(name)]
	if !ok {
		k = &key{name: name}
		v.keys[strings.ToLower(name)] = k
	}
	created := v.e.stamp()
	if n := len(k.versions); n > 0 && !created.After(k.versions[n-1].created) {
		created = k.versions[n-1].created.Add(time.Second)
	}
	kv := &keyVersion{
		version: randomHex(16), kty: s.kty, size: s.size, crv: s.crv, ops: s.ops,
		enabled: s.enabled, nbf: s.nbf, exp: s.exp, created: created, updated: created,
		tags: s.tags,
	}
	// Random material: the emulator performs no cryptography, but the
	// bundle carries well-formed public key fields.
	if kv.size > 0 {
		kv.n = randomBytes(kv.size / 8)
		kv.n[0] |= 0x80
	} else {
		kv.x, kv.y = randomBytes(curveSize(kv.crv)), randomBytes(curveSize(kv.crv))
	}
	k.versions = append(k.versions, kv)
	return kv
}

func (v *Vault) rotate(name string) (*keyVersion, error) {
	k, ok := v.keys[strings.ToLower(name)]
	if !ok || len(k.versions) == 0 {
		return nil, ErrNotFound
	}
	cur := k.versions[len(k.versions)-1]
	return v.addVersion(k.name, versionSpec{kty: cur.kty, size: cur.size, crv: cur.crv,
		ops: slices.Clone(cur.ops), enabled: true, tags: cur.tags}), nil
}

// find returns one version, or the current one for "". The caller holds
// the lock.
func (v *Vault) find(name, version string) (*keyVersion, error) {
	k, ok := v.keys[strings.ToLower(name)]
	if !ok || len(k.versions) == 0 {
		return nil, ErrNotFound
	}
	if version == "" {
		return k.versions[len(k.versions)-1], nil
	}
	for _, kv := range k.versions {
		if strings.EqualFold(kv.version, version) {
			return kv, nil
		}
	}
	return nil, ErrNotFound
}

func (v *Vault) info(name string, kv *keyVersion) KeyVersionInfo {
	return KeyVersionInfo{KID: v.kid(name, kv.version), Name: name, Version: kv.version,
		Created: kv.created, NotBefore: kv.nbf, Expires: kv.exp}
}

// kid is the key ID of a version ("": the versionless ID). The caller
// holds the lock.
func (v *Vault) kid(name, version string) string {
	s := v.keyIDBase() + "/keys/" + name
	if version != "" {
		s += "/" + version
	}
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// validObjectName: 1-127 letters, digits and dashes, as Key Vault requires.
func validObjectName(s string) bool {
	if s == "" || len(s) > 127 {
		return false
	}
	for _, r := range s {
		if r != '-' && !('0' <= r && r <= '9') && !('a' <= r && r <= 'z') && !('A' <= r && r <= 'Z') {
			return false
		}
	}
	return true
}

// Wire shapes of the Key Vault keys API.
type (
	jsonKey struct {
		KID    string   `json:"kid"`
		Kty    string   `json:"kty"`
		KeyOps []string `json:"key_ops"`
		N      string   `json:"n,omitempty"`
		E      string   `json:"e,omitempty"`
		Crv    string   `json:"crv,omitempty"`
		X      string   `json:"x,omitempty"`
		Y      string   `json:"y,omitempty"`
	}
	jsonAttributes struct {
		Enabled         bool   `json:"enabled"`
		NBF             *int64 `json:"nbf,omitempty"`
		EXP             *int64 `json:"exp,omitempty"`
		Created         int64  `json:"created"`
		Updated         int64  `json:"updated"`
		RecoveryLevel   string `json:"recoveryLevel"`
		RecoverableDays int    `json:"recoverableDays"`
		Exportable      bool   `json:"exportable"`
	}
	keyBundle struct {
		Key        jsonKey           `json:"key"`
		Attributes jsonAttributes    `json:"attributes"`
		Tags       map[string]string `json:"tags,omitempty"`
	}
	deletedKeyBundle struct {
		keyBundle
		RecoveryID         string `json:"recoveryId"`
		DeletedDate        int64  `json:"deletedDate"`
		ScheduledPurgeDate int64  `json:"scheduledPurgeDate"`
	}
	keyItem struct {
		KID        string            `json:"kid"`
		Attributes jsonAttributes    `json:"attributes"`
		Tags       map[string]string `json:"tags"`
	}
	keyList struct {
		Value    []keyItem `json:"value"`
		NextLink *string   `json:"nextLink"`
	}
	keyParameters struct {
		Kty        string            `json:"kty"`
		KeySize    int               `json:"key_size"`
		Crv        string            `json:"crv"`
		KeyOps     []string          `json:"key_ops"`
		Attributes *attributesUpdate `json:"attributes"`
		Tags       map[string]string `json:"tags"`
	}
	// attributesUpdate are the attributes a request sets: an absent
	// member leaves its attribute as it is, and a null nbf or exp removes
	// it (azcore.NullValue sends that null).
	attributesUpdate struct {
		Enabled *bool           `json:"enabled"`
		NBF     optional[int64] `json:"nbf"`
		EXP     optional[int64] `json:"exp"`
	}
)

// optional is a JSON member that tells absent (Set false) from null (Set
// and Null) and from a value (Set and V).
type optional[T any] struct {
	Set, Null bool
	V         T
}

func (o *optional[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		o.Null = true
		return nil
	}
	return json.Unmarshal(b, &o.V)
}

// applyTo sets the attributes a names (none when a is nil).
func (a *attributesUpdate) applyTo(enabled *bool, nbf, exp *time.Time) {
	if a == nil {
		return
	}
	if a.Enabled != nil {
		*enabled = *a.Enabled
	}
	for _, t := range []struct {
		in  optional[int64]
		dst *time.Time
	}{{a.NBF, nbf}, {a.EXP, exp}} {
		switch {
		case !t.in.Set:
		case t.in.Null:
			*t.dst = time.Time{}
		default:
			*t.dst = time.Unix(t.in.V, 0)
		}
	}
}

func unixPtr(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}

func (kv *keyVersion) attributes() jsonAttributes {
	return jsonAttributes{Enabled: kv.enabled, NBF: unixPtr(kv.nbf), EXP: unixPtr(kv.exp),
		Created: kv.created.Unix(), Updated: kv.updated.Unix(),
		RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: 90}
}

func (v *Vault) bundle(name string, kv *keyVersion) keyBundle {
	b64 := base64.RawURLEncoding.EncodeToString
	jk := jsonKey{KID: v.kid(name, kv.version), Kty: kv.kty, KeyOps: kv.ops}
	if kv.n != nil {
		jk.N, jk.E = b64(kv.n), b64([]byte{1, 0, 1})
	} else {
		jk.Crv, jk.X, jk.Y = kv.crv, b64(kv.x), b64(kv.y)
	}
	return keyBundle{Key: jk, Attributes: kv.attributes(), Tags: kv.tags}
}

// serve answers the Key Vault keys API. Authentication comes first, before
// any body is looked at, because azkeys sends its first request without a
// token and without its body to elicit the challenge.
func (v *Vault) serve(w http.ResponseWriter, r *http.Request, body []byte) {
	if _, te := checkToken(r, resourceKeyVault); te != tokenOK {
		v.challenge(w, te)
		return
	}
	if v.e.applyFault(svcKeyVault, w, r) {
		return
	}
	w.Header().Set("X-Ms-Keyvault-Service-Version", "1.9.0.0")

	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(segs) == 3 && segs[2] == "" {
		segs = segs[:2] // GET /keys/{name}/ is the current version
	}
	if len(segs) == 0 || !strings.EqualFold(segs[0], "keys") {
		writeKVError(w, http.StatusNotFound, "NotFound", "The requested resource was not found.")
		return
	}
	switch {
	case len(segs) == 1 && r.Method == http.MethodGet:
		v.listKeys(w, r)
	case len(segs) == 2 && r.Method == http.MethodGet:
		v.getKey(w, segs[1], "")
	case len(segs) == 2 && r.Method == http.MethodDelete:
		v.deleteKey(w, segs[1])
	case len(segs) == 3 && segs[2] == "versions" && r.Method == http.MethodGet:
		v.listVersions(w, r, segs[1])
	case len(segs) == 3 && segs[2] == "create" && r.Method == http.MethodPost:
		v.createKey(w, segs[1], body)
	case len(segs) == 3 && segs[2] == "rotate" && r.Method == http.MethodPost:
		v.rotateKey(w, segs[1])
	case len(segs) == 3 && r.Method == http.MethodGet:
		v.getKey(w, segs[1], segs[2])
	case len(segs) == 3 && r.Method == http.MethodPatch:
		v.updateKey(w, segs[1], segs[2], body)
	default:
		writeKVError(w, http.StatusMethodNotAllowed, "MethodNotAllowed",
			"The requested method "+r.Method+" is not allowed on "+r.URL.Path+".")
	}
}

// challenge answers 401 as Key Vault does: the WWW-Authenticate header
// names the tenant's authority and the vault resource.
func (v *Vault) challenge(w http.ResponseWriter, te tokenError) {
	w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/`+
		TenantID+`", resource="`+resourceKeyVault+`"`)
	msg := "Request is missing a Bearer or PoP token."
	switch te {
	case tokenInvalid:
		msg = "AKV10000: Request is missing a Bearer or PoP token."
	case tokenExpired:
		msg = "AKV10032: Token has expired."
	case tokenAudience:
		msg = "AKV10022: Invalid audience. Expected " + resourceKeyVault + "."
	}
	writeKVError(w, http.StatusUnauthorized, "Unauthorized", msg)
}

// writeKVError writes Key Vault's error body.
func writeKVError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// keyDisabled answers Key Vault's refusal to describe a disabled version.
func keyDisabled(w http.ResponseWriter) {
	writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]any{
		"code":       "Forbidden",
		"message":    "Operation get is not allowed on a disabled key.",
		"innererror": map[string]string{"code": "KeyDisabled"},
	}})
}

func keyNotFound(w http.ResponseWriter, name string) {
	writeKVError(w, http.StatusNotFound, "KeyNotFound", "A key with (name/id) "+name+
		" was not found in this key vault. If you recently deleted this key you may be able "+
		"to recover it using the correct recovery command. For help resolving this issue, "+
		"please see https://go.microsoft.com/fwlink/?linkid=2125182")
}

// getKey answers GET /keys/{name}[/{version}]. Key Vault refuses to
// describe a disabled version, the current one included; listing versions
// still shows it.
func (v *Vault) getKey(w http.ResponseWriter, name, version string) {
	v.e.mu.Lock()
	kv, err := v.find(name, version)
	var b keyBundle
	if err == nil {
		b = v.bundle(v.keys[strings.ToLower(name)].name, kv)
	}
	v.e.mu.Unlock()
	switch {
	case err != nil:
		keyNotFound(w, strings.TrimSuffix(name+"/"+version, "/"))
	case !b.Attributes.Enabled:
		keyDisabled(w)
	default:
		writeJSON(w, http.StatusOK, b)
	}
}

func (v *Vault) createKey(w http.ResponseWriter, name string, body []byte) {
	if !validObjectName(name) {
		writeKVError(w, http.StatusBadRequest, "BadParameter",
			"The request URI contains an invalid name: "+name)
		return
	}
	var p keyParameters
	if err := json.Unmarshal(body, &p); err != nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "Invalid request body: "+err.Error())
		return
	}
	s := versionSpec{kty: p.Kty, size: p.KeySize, crv: p.Crv, ops: p.KeyOps, enabled: true,
		tags: p.Tags}
	p.Attributes.applyTo(&s.enabled, &s.nbf, &s.exp)
	if err := s.complete(); err != nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", err.Error())
		return
	}
	v.e.mu.Lock()
	kv := v.addVersion(name, s)
	b := v.bundle(v.keys[strings.ToLower(name)].name, kv)
	v.e.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) rotateKey(w http.ResponseWriter, name string) {
	v.e.mu.Lock()
	kv, err := v.rotate(name)
	var b keyBundle
	if err == nil {
		b = v.bundle(v.keys[strings.ToLower(name)].name, kv)
	}
	v.e.mu.Unlock()
	if err != nil {
		keyNotFound(w, name)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (v *Vault) updateKey(w http.ResponseWriter, name, version string, body []byte) {
	var p keyParameters
	if err := json.Unmarshal(body, &p); err != nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "Invalid request body: "+err.Error())
		return
	}
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	kv, err := v.find(name, version)
	if err != nil {
		keyNotFound(w, name+"/"+version)
		return
	}
	if p.KeyOps != nil {
		kv.ops = slices.Clone(p.KeyOps)
	}
	p.Attributes.applyTo(&kv.enabled, &kv.nbf, &kv.exp)
	if p.Tags != nil {
		kv.tags = p.Tags
	}
	kv.updated = v.e.stamp()
	writeJSON(w, http.StatusOK, v.bundle(v.keys[strings.ToLower(name)].name, kv))
}

func (v *Vault) deleteKey(w http.ResponseWriter, name string) {
	v.e.mu.Lock()
	defer v.e.mu.Unlock()
	k, ok := v.keys[strings.ToLower(name)]
	if !ok {
		keyNotFound(w, name)
		return
	}
	delete(v.keys, strings.ToLower(name))
	now := v.e.stamp()
	b := v.bundle(k.name, k.versions[len(k.versions)-1])
	writeJSON(w, http.StatusOK, deletedKeyBundle{keyBundle: b,
		RecoveryID:         v.keyIDBase() + "/deletedkeys/" + k.name,
		DeletedDate:        now.Unix(),
		ScheduledPurgeDate: now.Add(90 * 24 * time.Hour).Unix()})
}

// kvPageSize is Key Vault's default and largest page.
const kvPageSize = 25

// page reads maxresults and $skiptoken; ok is false after an error answer.
func page(w http.ResponseWriter, r *http.Request) (size, skip int, ok bool) {
	q := r.URL.Query()
	size = kvPageSize
	if s := q.Get("maxresults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > kvPageSize {
			writeKVError(w, http.StatusBadRequest, "BadParameter",
				"maxresults must be an integer between 1 and 25.")
			return 0, 0, false
		}
		size = n
	}
	if s := q.Get("$skiptoken"); s != "" {
		b, err := base64.RawURLEncoding.DecodeString(s)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			writeKVError(w, http.StatusBadRequest, "BadParameter", "The $skiptoken is invalid.")
			return 0, 0, false
		}
		skip = n
	}
	return size, skip, true
}

// nextLink is the absolute URL of the page after skip+size, or nil.
func nextLink(r *http.Request, skip, size, total int) *string {
	if skip+size >= total {
		return nil
	}
	q := url.Values{}
	q.Set("api-version", r.URL.Query().Get("api-version"))
	q.Set("$skiptoken", base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(skip+size))))
	q.Set("maxresults", strconv.Itoa(size))
	s := "https://" + r.Host + r.URL.Path + "?" + q.Encode()
	return &s
}

func (v *Vault) listVersions(w http.ResponseWriter, r *http.Request, name string) {
	size, skip, ok := page(w, r)
	if !ok {
		return
	}
	v.e.mu.Lock()
	k, found := v.keys[strings.ToLower(name)]
	var items []keyItem
	if found {
		for _, kv := range k.versions {
			items = append(items, keyItem{KID: v.kid(k.name, kv.version),
				Attributes: kv.attributes(), Tags: orEmpty(kv.tags)})
		}
	}
	v.e.mu.Unlock()
	if !found {
		keyNotFound(w, name)
		return
	}
	writePage(w, r, items, size, skip)
}

func (v *Vault) listKeys(w http.ResponseWriter, r *http.Request) {
	size, skip, ok := page(w, r)
	if !ok {
		return
	}
	v.e.mu.Lock()
	var items []keyItem
	for _, k := range v.keys {
		cur := k.versions[len(k.versions)-1]
		items = append(items, keyItem{KID: v.kid(k.name, ""), Attributes: cur.attributes(),
			Tags: orEmpty(cur.tags)})
	}
	v.e.mu.Unlock()
	sort.Slice(items, func(i, j int) bool { return items[i].KID < items[j].KID })
	writePage(w, r, items, size, skip)
}

func writePage(w http.ResponseWriter, r *http.Request, items []keyItem, size, skip int) {
	l := keyList{Value: []keyItem{}, NextLink: nextLink(r, skip, size, len(items))}
	if skip < len(items) {
		l.Value = items[skip:min(skip+size, len(items))]
	}
	writeJSON(w, http.StatusOK, l)
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// portOf returns the port of host:port, or "".
func portOf(hostport string) string {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || strings.HasSuffix(hostport, "]") {
		return ""
	}
	return hostport[i+1:]
}
