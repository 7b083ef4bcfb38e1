package emulator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Defaults used where Options or ServerSpec leave a field zero.
const (
	// DefaultClientID is the client ID of the function's user-assigned
	// identity when Options.ClientID is empty.
	DefaultClientID = "5e29463d-71da-4fe0-8e69-999b57db23b0"

	// TenantID is the tenant every emulated resource lives in; Key Vault's
	// challenge names it.
	TenantID = "72f9a1c4-3b8d-4e51-9a0c-6d2b8e4f1a07"

	// DefaultSubscription and DefaultResourceGroup place vaults (in event
	// topics) and servers whose ServerSpec leaves them empty.
	DefaultSubscription  = "00000000-0000-0000-0000-0000000000aa"
	DefaultResourceGroup = "rg-cmk"

	// DefaultLocation is a server's location when ServerSpec leaves it empty.
	DefaultLocation = "westus"
)

// Options configure Start. The zero value is ready to use.
type Options struct {
	Logger   *slog.Logger // nil: discard
	ClientID string       // the function's user-assigned identity; zero: DefaultClientID

	// ListPageSize is how many servers one ARM list page holds; zero: 100.
	// Key Vault pages hold 25 versions unless the request asks for fewer
	// with maxresults, as the service does.
	ListPageSize int
}

// Emulator is a running emulation of managed identity, Key Vault and the
// Fluid Relay resource provider. It is safe for concurrent use. Close it
// when done.
type Emulator struct {
	log      *slog.Logger
	clientID string
	idHeader string
	pageSize int

	cert     tls.Certificate
	pool     *x509.CertPool
	certFile string
	client   *http.Client

	identity *listener
	arm      *listener
	control  *listener

	mu       sync.Mutex
	closed   bool
	vaults   map[string]*Vault // by lower-case name
	ports    map[string]*Vault // by listener port
	servers  map[string]*server
	requests []Request
	faults   []*faultEntry
	faultSeq int
	throttle *throttle
	stale    map[string]*staleRead
	pending  map[string]*pendingState // by lower-case server ID
}

// listener is one loopback endpoint and the server behind it.
type listener struct {
	url     string
	host    string // 127.0.0.1:P
	handler http.Handler
	srv     *http.Server
}

// Start starts the emulator on loopback ephemeral ports: a plain HTTP
// managed identity endpoint, an HTTPS Resource Manager endpoint, a plain
// HTTP control surface, and one HTTPS endpoint per vault added later. A
// certificate is generated for the HTTPS endpoints and written to a PEM
// file (CertFile) that Close removes.
func Start(opts Options) (*Emulator, error) {
	e := &Emulator{
		log:      opts.Logger,
		clientID: strings.ToLower(opts.ClientID),
		idHeader: randomHex(16),
		pageSize: opts.ListPageSize,
		vaults:   map[string]*Vault{},
		ports:    map[string]*Vault{},
		servers:  map[string]*server{},
		stale:    map[string]*staleRead{},
		pending:  map[string]*pendingState{},
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.clientID == "" {
		e.clientID = DefaultClientID
	}
	if e.pageSize <= 0 {
		e.pageSize = 100
	}

	if err := e.setupTLS(); err != nil {
		return nil, fmt.Errorf("start emulator: %w", err)
	}

	var err error
	if e.identity, err = e.listen(false, e.handler(svcIdentity, e.serveIdentity)); err != nil {
		e.Close()
		return nil, fmt.Errorf("start emulator: identity endpoint: %w", err)
	}
	if e.arm, err = e.listen(true, e.handler(svcARM, e.serveARM)); err != nil {
		e.Close()
		return nil, fmt.Errorf("start emulator: resource manager: %w", err)
	}
	if e.control, err = e.listen(false, e.controlHandler()); err != nil {
		e.Close()
		return nil, fmt.Errorf("start emulator: control surface: %w", err)
	}
	e.log.Info("emulator started", "arm", e.arm.url, "identity", e.IdentityEndpoint(),
		"control", e.control.url)
	return e, nil
}

// listen serves h on a new loopback port, over TLS when secure.
func (e *Emulator) listen(secure bool, h http.Handler) (*listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &listener{host: ln.Addr().String(), handler: h}
	l.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	scheme := "http"
	if secure {
		scheme = "https"
		// HTTP/1.1 only, so that a connection-reset fault closes the
		// connection for exactly one request.
		ln = tls.NewListener(ln, &tls.Config{
			Certificates: []tls.Certificate{e.cert},
			NextProtos:   []string{"http/1.1"},
			MinVersion:   tls.VersionTLS12,
		})
	}
	l.url = scheme + "://" + l.host
	go l.srv.Serve(ln)
	return l, nil
}

// Close stops every listener and removes the certificate file. Requests in
// flight are cut off. Close is idempotent.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	ls := []*listener{e.identity, e.arm, e.control}
	for _, v := range e.vaults {
		ls = append(ls, v.ln)
	}
	e.mu.Unlock()

	var errs []error
	for _, l := range ls {
		if l != nil {
			errs = append(errs, l.srv.Close())
		}
	}
	if e.client != nil {
		e.client.CloseIdleConnections()
	}
	if e.certFile != "" {
		errs = append(errs, os.Remove(e.certFile))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close emulator: %w", err)
	}
	return nil
}

// IdentityEndpoint is the managed identity endpoint, for IDENTITY_ENDPOINT:
// http://127.0.0.1:P/msi/token.
func (e *Emulator) IdentityEndpoint() string { return e.identity.url + "/msi/token" }

// IdentityHeader is the secret the identity endpoint requires in
// X-IDENTITY-HEADER, for IDENTITY_HEADER.
func (e *Emulator) IdentityHeader() string { return e.idHeader }

// ClientID is the client ID of the function's user-assigned identity, for
// AZURE_CLIENT_ID. The identity endpoint issues tokens for it only.
func (e *Emulator) ClientID() string { return e.clientID }

// ARMEndpoint is the Resource Manager endpoint: https://127.0.0.1:P.
func (e *Emulator) ARMEndpoint() string { return e.arm.url }

// ControlURL is the base URL of the JSON control surface (see the package
// documentation): http://127.0.0.1:P.
func (e *Emulator) ControlURL() string { return e.control.url }

// CertPool holds the certificate of every HTTPS endpoint.
func (e *Emulator) CertPool() *x509.CertPool { return e.pool }

// CertFile is the path of the certificate in PEM, for SSL_CERT_FILE. Go
// reads SSL_CERT_FILE once per process, on the first TLS handshake that
// uses the system pool.
func (e *Emulator) CertFile() string { return e.certFile }

// HTTPClient returns a client over real sockets that trusts the emulator's
// certificate. It satisfies azcore's policy.Transporter.
func (e *Emulator) HTTPClient() *http.Client { return e.client }

// randomHex returns n random bytes in lower-case hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newGUID returns a random version-4 UUID.
func newGUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Service names as recorded in Request.Service and matched by Fault.Service.
const (
	svcARM      = "arm"
	svcKeyVault = "keyvault"
	svcIdentity = "identity"
)

// Request is one request an emulated endpoint received, with the status it
// answered (0 when a fault reset the connection).
type Request struct {
	Time    time.Time `json:"time"`
	Service string    `json:"service"` // "arm", "keyvault", "identity"
	Method  string    `json:"method"`
	Host    string    `json:"host"`
	Path    string    `json:"path"`
	Query   string    `json:"query"`
	Body    []byte    `json:"body,omitempty"` // base64 in JSON
	Status  int       `json:"status"`
}

// Requests returns a copy of every request recorded since Start or the last
// ResetRequests, oldest first.
func (e *Emulator) Requests() []Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Request(nil), e.requests...)
}

// ResetRequests forgets the recorded requests.
func (e *Emulator) ResetRequests() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests = nil
}

// maxBody bounds request bodies; nothing the emulated APIs take is larger.
const maxBody = 1 << 20

// serviceFunc serves one request whose body has been read.
type serviceFunc func(w http.ResponseWriter, r *http.Request, body []byte)

// handler wraps a service: it reads the body, records the request and the
// status answered, and turns a reset fault into a dropped connection.
func (e *Emulator) handler(service string, serve serviceFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		rec := Request{
			Time:    time.Now(),
			Service: service,
			Method:  r.Method,
			Host:    r.Host,
			Path:    r.URL.Path,
			Query:   r.URL.RawQuery,
			Body:    body,
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			rec.Status = sw.status // 0 when a reset fault dropped the connection
			e.record(rec)
			e.log.Debug("request", "service", service, "method", r.Method,
				"path", r.URL.Path, "status", rec.Status)
		}()
		w.Header().Set("X-Ms-Request-Id", newGUID())
		serve(sw, r, body)
	})
}

func (e *Emulator) record(r Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests = append(e.requests, r)
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// sleepCtx waits d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
