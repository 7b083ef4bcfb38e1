package emulator

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Token audiences the emulated services accept.
const (
	resourceKeyVault = "https://vault.azure.net"
	resourceARM      = "https://management.core.windows.net/"
	resourceARMAlt   = "https://management.azure.com/"
)

// tokenLifetime is what App Service issues: about a day.
const tokenLifetime = 24 * time.Hour

// tokenKey signs the emulator's opaque tokens. It is shared by every
// emulator in the process because azidentity caches tokens process-wide by
// identity and resource: a token issued by one emulator may be presented to
// another one started later.
var tokenKey = func() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}()

// claims is what a token is bound to.
type claims struct {
	Resource string `json:"r"`
	ClientID string `json:"c"`
	Expires  int64  `json:"e"`
	Nonce    string `json:"n"`
}

func issueToken(c claims) string {
	c.Nonce = randomHex(8)
	payload, _ := json.Marshal(c)
	p := base64.RawURLEncoding.EncodeToString(payload)
	return p + "." + base64.RawURLEncoding.EncodeToString(sign(p))
}

func sign(p string) []byte {
	m := hmac.New(sha256.New, tokenKey)
	m.Write([]byte(p))
	return m.Sum(nil)
}

// parseToken returns the claims of a token this process issued, or false.
func parseToken(tok string) (claims, bool) {
	p, s, ok := strings.Cut(tok, ".")
	if !ok {
		return claims{}, false
	}
	mac, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !hmac.Equal(mac, sign(p)) {
		return claims{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return claims{}, false
	}
	var c claims
	if json.Unmarshal(payload, &c) != nil {
		return claims{}, false
	}
	return c, true
}

// bearer extracts the bearer token of r, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// tokenError says why a bearer token is refused; tokenOK when accepted.
type tokenError int

const (
	tokenOK tokenError = iota
	tokenMissing
	tokenInvalid
	tokenExpired
	tokenAudience
)

// checkToken validates r's bearer token for one of the audiences.
func checkToken(r *http.Request, audiences ...string) (claims, tokenError) {
	tok := bearer(r)
	if tok == "" {
		return claims{}, tokenMissing
	}
	c, ok := parseToken(tok)
	if !ok {
		return claims{}, tokenInvalid
	}
	if time.Now().Unix() >= c.Expires {
		return c, tokenExpired
	}
	for _, a := range audiences {
		if strings.TrimSuffix(c.Resource, "/") == strings.TrimSuffix(a, "/") {
			return c, tokenOK
		}
	}
	return c, tokenAudience
}

// serveIdentity is the App Service managed identity protocol, version
// 2019-08-01: https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference
func (e *Emulator) serveIdentity(w http.ResponseWriter, r *http.Request, _ []byte) {
	if r.URL.Path != "/msi/token" {
		writeIdentityError(w, http.StatusNotFound, "Not found.")
		return
	}
	if r.Method != http.MethodGet {
		writeIdentityError(w, http.StatusMethodNotAllowed, "Only GET is supported.")
		return
	}
	if h := r.Header.Get("X-IDENTITY-HEADER"); h != e.idHeader {
		writeIdentityError(w, http.StatusUnauthorized,
			"The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.")
		return
	}
	if e.applyFault(svcIdentity, w, r) {
		return
	}

	q := r.URL.Query()
	if v := q.Get("api-version"); v != "2019-08-01" {
		writeIdentityError(w, http.StatusBadRequest,
			"The api-version '"+v+"' is not supported; use 2019-08-01.")
		return
	}
	resource := q.Get("resource")
	if resource == "" {
		writeIdentityError(w, http.StatusBadRequest, "The resource parameter is required.")
		return
	}
	// The function has a user-assigned identity only, so a request for the
	// system-assigned identity (no client_id) finds none, as on App Service.
	cid := strings.ToLower(q.Get("client_id"))
	if cid == "" || cid != e.clientID {
		writeIdentityError(w, http.StatusBadRequest,
			"Unable to load the proper Managed Identity. No user-assigned identity with client_id '"+
				q.Get("client_id")+"' is assigned to this app, and it has no system-assigned identity.")
		return
	}

	exp := time.Now().Add(tokenLifetime).Unix()
	writeJSON(w, http.StatusOK, map[string]string{
		"access_token": issueToken(claims{Resource: resource, ClientID: cid, Expires: exp}),
		"expires_on":   strconv.FormatInt(exp, 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    cid,
	})
}

// writeIdentityError writes the error body App Service's endpoint uses.
func writeIdentityError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"statusCode": status, "message": msg,
		"correlationId": newGUID()})
}

// writeJSON writes v as a JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
