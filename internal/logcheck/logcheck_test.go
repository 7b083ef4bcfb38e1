package logcheck_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/azurite"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
)

// issued is what a real emulator hands out: a token through azidentity,
// the identity endpoint's raw answer, and a key's RSA modulus as Key
// Vault returns it.
type issued struct {
	emu     *emulator.Emulator
	token   string // through azidentity
	answer  string // the identity endpoint's body
	modulus string // base64url, as in the JWK
}

func issue(t *testing.T) issued {
	t.Helper()
	emu := testenv.Start(t)
	vault := emu.AddVault("kv")
	if _, err := vault.CreateKey("cmk", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	co := azcore.ClientOptions{Transport: emu.HTTPClient()}
	cred, _, _ := testenv.Adapters(t, emu, co)
	tok, err := cred.GetToken(t.Context(),
		policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		t.Fatal(err)
	}

	q := url.Values{"api-version": {"2019-08-01"}, "resource": {"https://management.azure.com/"},
		"client_id": {emu.ClientID()}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet,
		emu.IdentityEndpoint()+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-IDENTITY-HEADER", emu.IdentityHeader())
	resp, err := emu.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %v from the identity endpoint, want 200", resp.StatusCode, err)
	}

	keys, err := azkeys.NewClient(vault.URL(), cred, &azkeys.ClientOptions{
		ClientOptions: co, DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := keys.GetKey(t.Context(), "cmk", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return issued{emu: emu, token: tok.Token, answer: string(answer),
		modulus: base64.RawURLEncoding.EncodeToString(key.Key.N)}
}

// jsonLine is how a slog JSON handler writes msg with attributes kv.
func jsonLine(msg string, kv ...any) string {
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info(msg, kv...)
	return b.String()
}

// sample is a log text carrying secret as kind.
type sample struct {
	name   string
	text   string
	kind   logcheck.Kind
	secret string
}

func samples(t *testing.T) []sample {
	t.Helper()
	is := issue(t)
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	var identity struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(is.answer), &identity); err != nil || identity.AccessToken == "" {
		t.Fatalf("got %v decoding the identity answer, want an access_token", err)
	}
	if !strings.HasPrefix(is.token, "eyJ") || strings.Count(is.token, ".") != 1 {
		t.Fatalf("got a token of %d dots, want the emulator's eyJ….…", strings.Count(is.token, "."))
	}
	const (
		jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCJ9." +
			"c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
		sasSig  = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789%2Babc%3D"
		sas     = "sv=2023-11-03&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=rl&sig=" + sasSig
		egKey   = "egKeyAbCdEfGhIjKlMnOpQrStUvWxYz0123456789="
		egToken = "r=https%3a%2f%2ftopic&e=1&s=" + egKey
		fnKey   = "fnKeyAbCdEfGhIjKlMnOpQrSt=="
		refresh = "0.ARoAv4j5cvGGr0GRqy180BHbR"
		shared  = "devstoreaccount1:c2lnbmF0dXJlLXZhbHVl"
	)
	idHeader := is.emu.IdentityHeader()
	conn := "DefaultEndpointsProtocol=http;AccountName=" + azurite.AccountName +
		";AccountKey=" + azurite.AccountKey + ";BlobEndpoint=http://127.0.0.1:1/x"
	return []sample{
		{"emulator token in an attribute",
			jsonLine("token acquired", "token", is.token), logcheck.JWT, is.token},
		{"emulator token after Bearer",
			`level=DEBUG msg=request auth="Bearer ` + is.token + `"`, logcheck.Bearer, is.token},
		{"three-part JWT",
			jsonLine("claims", "jwt", jwt), logcheck.JWT, jwt},
		{"identity endpoint answer",
			jsonLine("identity answered", "body", is.answer), logcheck.OAuthToken, identity.AccessToken},
		{"Authorization header",
			jsonLine("request", "headers", fmt.Sprint(http.Header{"Authorization": {"Bearer " + is.token}})),
			logcheck.Authorization, is.token},
		{"Authorization SharedKey",
			"Authorization: SharedKey " + shared, logcheck.Authorization, shared},
		{"refresh_token parameter",
			"grant_type=refresh_token&refresh_token=" + refresh, logcheck.OAuthToken, refresh},
		{"connection string",
			jsonLine("open", "err", "bad connection string "+conn), logcheck.AccountKey, azurite.AccountKey},
		{"SAS URL",
			jsonLine("download", "url", "https://acct.blob.core.windows.net/deadletters/x.json?"+sas),
			logcheck.SASSignature, sasSig},
		{"Event Grid connection string",
			"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=" + egKey,
			logcheck.SharedAccessKey, egKey},
		{"aeg-sas-key header",
			jsonLine("publish", "headers", fmt.Sprint(http.Header{"Aeg-Sas-Key": {egKey}})),
			logcheck.EventGridSAS, egKey},
		{"aeg-sas-token header",
			"aeg-sas-token: " + egToken, logcheck.EventGridSAS, egToken},
		{"identity header",
			"X-IDENTITY-HEADER: " + idHeader, logcheck.IdentityHeader, idHeader},
		{"identity header variable",
			"IDENTITY_HEADER=" + idHeader, logcheck.IdentityHeader, idHeader},
		{"registered identity header",
			jsonLine("starting", "env", "h="+idHeader), logcheck.Registered, idHeader},
		{"function key",
			`curl -H "x-functions-key: ` + fnKey + `" http://127.0.0.1:7071/api/status`, logcheck.FunctionsKey, fnKey},
		{"private key",
			jsonLine("loaded", "pem", block), logcheck.PrivateKey, block[:strings.Index(block, "KEY-----")+8]},
		{"RSA modulus",
			jsonLine("key read", "n", is.modulus), logcheck.KeyMaterial, is.modulus},
	}
}

// TestScanKinds: each kind is found once, by its kind, and its excerpt
// shows at most a few characters of the secret.
func TestScanKinds(t *testing.T) {
	for _, s := range samples(t) {
		t.Run(s.name, func(t *testing.T) {
			got := logcheck.Scan(s.text)
			if len(got) != 1 || got[0].Kind != s.kind {
				t.Fatalf("got %v, want one %s", got, s.kind)
			}
			if strings.Contains(got[0].String(), s.secret) || !strings.HasSuffix(got[0].Excerpt, "…") ||
				len([]rune(got[0].Excerpt)) > 7 {
				t.Errorf("got excerpt %d runes long, want at most 6 of the secret and …", len([]rune(got[0].Excerpt)))
			}
		})
	}
}

// TestScanLine: a finding names the line the credential is on.
func TestScanLine(t *testing.T) {
	got := logcheck.Scan("one\ntwo\nthree AccountKey=" + azurite.AccountKey + "\n")
	if len(got) != 1 || got[0].Line != 3 {
		t.Errorf("got %v, want one finding on line 3", got)
	}
}

// TestScanRedactedValues: values already redacted, empty members and the
// words of messages about credentials are not credentials.
func TestScanRedactedValues(t *testing.T) {
	for _, text := range []string{
		"Authorization: REDACTED",
		"Authorization: Bearer REDACTED",
		`https://acct.blob.core.windows.net/c/b?se=2030-01-01&sig=REDACTED&sp=r`,
		`{"access_token":"","token_type":"Bearer"}`,
		`WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/tenant", resource="https://vault.azure.net"`,
		`WWW-Authenticate: Bearer authorization_uri="https://login.microsoftonline.com/tenant"`,
		"the token endpoint refused IDENTITY_HEADER: App Service sets it",
		"The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
		"set IDENTITY_ENDPOINT and IDENTITY_HEADER, for an app with a managed identity",
		"bearer token refused: 401",
		"X-Identity-Header: [REDACTED]",
	} {
		if got := logcheck.Scan(text); len(got) != 0 {
			t.Errorf("Scan(%q): got %v, want nothing", text, got)
		}
	}
}

// recorder is a testing.TB whose failures and cleanups the test runs
// itself.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	fatal    bool
	cleanups []func()
}

func (r *recorder) Helper()          {}
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(f, a...))
}
func (r *recorder) Fatalf(f string, a ...any) { r.Errorf(f, a...); r.fatal = true }

// end runs the cleanups, last first, as testing does.
func (r *recorder) end() []string {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	return r.errs
}

// TestLogReportsAtCleanup: a Log fails its test when the test ends, once
// per credential, with messages that never show the secret, and also
// sees lines written after the test's body.
func TestLogReportsAtCleanup(t *testing.T) {
	is := issue(t)
	rec := &recorder{TB: t}
	log := logcheck.Logger(rec)
	log.Debug("token acquired", "token", is.token)
	if len(rec.errs) != 0 {
		t.Fatalf("got %q before the test ended, want the scan at cleanup", rec.errs)
	}

	// A goroutine logging after the body, as a server closed in cleanup does.
	done := make(chan struct{})
	rec.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		log.Info("late", "header", "Authorization: Bearer "+is.token)
	}()

	errs := rec.end()
	if len(errs) != 2 {
		t.Fatalf("got %d failures %q, want 2", len(errs), errs)
	}
	for _, e := range errs {
		if strings.Contains(e, is.token) || strings.Contains(e, is.token[:12]) {
			t.Errorf("got a failure showing the token's first 12 characters, want at most 6")
		}
		if !strings.HasPrefix(e, "got ") || !strings.Contains(e, "want no credential") {
			t.Errorf("got failure %q, want got …, want no credential …", e)
		}
	}
}

// TestLogString: a Log keeps what its logger wrote, at Debug, as JSON
// lines, for the test to read; clean logs fail nothing.
func TestLogString(t *testing.T) {
	rec := &recorder{TB: t}
	l := logcheck.New(rec)
	log := l.Logger().With("component", "test")
	log.Debug("server rotated",
		"server_id", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.FluidRelay/fluidRelayServers/relay-1",
		"key_version", "0123456789abcdef0123456789abcdef")
	var line map[string]any
	if err := json.Unmarshal([]byte(l.String()), &line); err != nil || line["msg"] != "server rotated" ||
		line["level"] != "DEBUG" || line["component"] != "test" {
		t.Errorf("got %q (%v), want one JSON debug line", l.String(), err)
	}
	if errs := rec.end(); len(errs) != 0 {
		t.Errorf("got %q, want no failure", errs)
	}
}

// TestWriter: Writer passes everything on, serialised, and scans it; a
// skipped line is written but not scanned.
func TestWriter(t *testing.T) {
	rec := &recorder{TB: t}
	var out strings.Builder
	w := logcheck.Writer(rec, &out, "export IDENTITY_ENDPOINT=")
	lines := []string{
		"  export IDENTITY_ENDPOINT=http://127.0.0.1:1/msi/token IDENTITY_HEADER=0123456789abcdef0123456789abcdef \\\n",
		"sig=" + strings.Repeat("A", 40) + "\n",
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for _, l := range lines {
				if _, err := io.WriteString(w, l); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got := strings.Count(out.String(), "IDENTITY_HEADER="); got != 50 {
		t.Errorf("got %d env lines written on, want 50", got)
	}
	errs := rec.end()
	if len(errs) != 21 || !strings.Contains(errs[20], "30 more") {
		t.Errorf("got %d failures, the last %q, want 20 and one counting 30 more", len(errs), errs[len(errs)-1])
	}
	for _, e := range errs {
		if strings.Contains(e, "identity header") {
			t.Errorf("got %q, want the skipped env line left out", e)
		}
	}

	rec = &recorder{TB: t}
	if _, err := io.WriteString(logcheck.Writer(rec, nil), lines[0]); err != nil {
		t.Fatal(err)
	}
	if errs := rec.end(); len(errs) != 1 || !strings.Contains(errs[0], string(logcheck.IdentityHeader)) {
		t.Errorf("got %q, want the env line found without a skip", errs)
	}
}

// TestSecret: a registered secret is found anywhere, also query-escaped;
// one too short to be told from ordinary text is refused.
func TestSecret(t *testing.T) {
	const s = "s3cret/value+with=signs"
	logcheck.Secret(t, s)
	for _, text := range []string{"x" + s + "y", "u?k=" + url.QueryEscape(s)} {
		if got := logcheck.Scan(text); len(got) != 1 || got[0].Kind != logcheck.Registered {
			t.Errorf("Scan(%q): got %v, want the registered secret", text, got)
		}
	}

	rec := &recorder{TB: t}
	logcheck.Secret(rec, "short")
	if !rec.fatal {
		t.Error("got a 5-character secret accepted, want the test failed")
	}
}

func ExampleScan() {
	line := `{"level":"DEBUG","msg":"request","header":"Authorization: Bearer eyJyIjoiaHR0cHMifQ.c2lnbmF0dXJl"}`
	for _, f := range logcheck.Scan(line) {
		fmt.Println(f)
	}
	// Output: Authorization header value "eyJyIj…" on line 1
}
