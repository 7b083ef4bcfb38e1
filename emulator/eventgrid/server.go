package eventgrid

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"time"
)

// Audience is the token audience Event Grid expects from bearer tokens,
// for topics and namespaces alike.
const Audience = "https://eventgrid.azure.net"

// DefaultKey is the shared access key accepted when Options.Key is zero.
const DefaultKey = "ZW11bGF0b3Ita2V5LWZvci1ldmVudC1ncmlkLXRvcGljcw=="

// inProcessHost is the host of a server that listens on no socket.
const inProcessHost = "eventgrid.localhost"

// Options configures a Server. The zero value is ready to use.
type Options struct {
	// TLS serves the listener with this configuration; nil: a
	// certificate generated for 127.0.0.1, ::1 and localhost.
	TLS *tls.Config

	// Key is the shared access key of every topic and namespace, sent
	// by clients as "aeg-sas-key" or "Authorization: SharedAccessKey";
	// zero: DefaultKey.
	Key string

	// ValidateToken decides whether a bearer token is accepted; the
	// audience is always Audience. Nil: bearer tokens are refused.
	ValidateToken func(token, audience string) error

	// InProcess opens no socket: the server is reachable only through
	// InProcessTransport, at https://eventgrid.localhost. Use it inside
	// a testing/synctest bubble, where a listener would keep the
	// bubble from ever becoming idle.
	InProcess bool

	// Logger receives one debug line per request; nil: discard.
	Logger *slog.Logger
}

// Server emulates Event Grid namespace topics and custom topics over
// HTTPS on a loopback port. It is safe for concurrent use.
type Server struct {
	opts    Options
	url     *url.URL
	pool    *x509.CertPool
	handler http.Handler
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	once    sync.Once

	mu         sync.Mutex
	topics     map[string]*Topic
	namespaces map[string]*NamespaceTopic
	requests   []Request
	faults     []*fault
}

// Start starts a server on 127.0.0.1 with a free port, or without a
// socket when opts.InProcess is set. Close it when done.
func Start(opts Options) (*Server, error) {
	if opts.Key == "" {
		opts.Key = DefaultKey
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:       opts,
		done:       make(chan struct{}),
		topics:     map[string]*Topic{},
		namespaces: map[string]*NamespaceTopic{},
	}
	s.handler = s.routes()

	cfg := opts.TLS
	if cfg == nil {
		cert, err := generateCert()
		if err != nil {
			return nil, fmt.Errorf("start event grid emulator: %w", err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	s.pool = poolOf(cfg)

	if opts.InProcess {
		s.url = &url.URL{Scheme: "https", Host: inProcessHost}
		return s, nil
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start event grid emulator: listen: %w", err)
	}
	s.ln = ln
	s.url = &url.URL{Scheme: "https", Host: ln.Addr().String()}
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	tlsLn := tls.NewListener(ln, cfg.Clone())
	go func() { _ = s.srv.Serve(tlsLn) }()
	return s, nil
}

// URL is the server's base URL, https://127.0.0.1:P (or
// https://eventgrid.localhost in process). It is the endpoint of the
// namespace for aznamespaces clients.
func (s *Server) URL() string { return s.url.String() }

// CertPool trusts the server's certificate: the generated one, or the
// first certificate of Options.TLS.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// Handler is the server's HTTP handler, for serving it on another
// listener or routing to it from another transport.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPClient returns a client that trusts the server's certificate and
// talks to it over real sockets.
func (s *Server) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: s.pool}
	return &http.Client{Transport: tr}
}

// InProcessTransport serves requests for the server's host by calling
// its handler directly, without sockets or TLS. It refuses other hosts.
// Requests block as they would on the wire (a receive waits for
// events), which under testing/synctest advances the fake clock.
func (s *Server) InProcessTransport() http.RoundTripper {
	return inProcess{s}
}

// Close stops the server and wakes every waiting receive. It is safe
// to call more than once.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		if s.srv != nil {
			err = s.srv.Close()
		}
	})
	return err
}

type inProcess struct{ s *Server }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.s.url.Host {
		closeBody(req)
		return nil, fmt.Errorf("event grid emulator: no route to host %q", req.URL.Host)
	}

	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		closeBody(req)
		if err != nil {
			return nil, fmt.Errorf("event grid emulator: read request body: %w", err)
		}
		body = b
	}

	in := req.Clone(req.Context())
	in.Body = io.NopCloser(bytes.NewReader(body))
	in.ContentLength = int64(len(body))
	in.RequestURI = req.URL.RequestURI()
	in.Host = req.URL.Host
	in.RemoteAddr = "127.0.0.1:1"
	in.TLS = &tls.ConnectionState{HandshakeComplete: true, ServerName: req.URL.Hostname()}

	rec := httptest.NewRecorder()
	t.s.handler.ServeHTTP(rec, in)
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// generateCert makes a self-signed certificate for the loopback
// addresses. Its validity is fixed and wide so that it also verifies
// under the fake clock of a testing/synctest bubble.
func generateCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "event grid emulator"},
		NotBefore:             time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost", inProcessHost},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// poolOf trusts the first certificate of cfg, if it has one.
func poolOf(cfg *tls.Config) *x509.CertPool {
	pool := x509.NewCertPool()
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return pool
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
			return pool
		}
	}
	pool.AddCert(leaf)
	return pool
}

// closed reports whether the server has been closed.
func (s *Server) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
