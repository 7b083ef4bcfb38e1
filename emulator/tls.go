package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"
)

// setupTLS generates one self-signed ECDSA certificate for every HTTPS
// endpoint, the pool that trusts it, its PEM file and a client.
func (e *Emulator) setupTLS() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return fmt.Errorf("generate certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "cmkrotator emulator"},
		// Valid from before 2000 so that code running in a testing/synctest
		// bubble, whose clock starts at 2000-01-01, accepts it too.
		NotBefore:             time.Date(1999, 12, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse certificate: %w", err)
	}
	e.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	e.pool = x509.NewCertPool()
	e.pool.AddCert(leaf)

	f, err := os.CreateTemp("", "cmkrotator-emulator-*.pem")
	if err != nil {
		return fmt.Errorf("write certificate file: %w", err)
	}
	e.certFile = f.Name()
	werr := pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("write certificate file: %w", werr)
	}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: e.pool, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64
	e.client = &http.Client{Transport: tr}
	return nil
}
