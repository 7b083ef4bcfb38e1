package emulator_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// A client trusting only CertPool, or only the certificate in CertFile,
// reaches a vault; one trusting other roots does not.
func TestTLS_CertPoolAndFile(t *testing.T) {
	e := start(t)
	v := e.AddVault("tls")
	if _, err := v.CreateKey("k", emulator.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(e.CertFile())
	if err != nil {
		t.Fatalf("read CertFile: %v", err)
	}
	fromFile := x509.NewCertPool()
	if !fromFile.AppendCertsFromPEM(pem) {
		t.Fatalf("CertFile %s holds no PEM certificate", e.CertFile())
	}
	cred := credential(t, e, e.HTTPClient())

	tests := []struct {
		name    string
		roots   *x509.CertPool // nil: the system roots
		reaches bool
	}{
		{"CertPool", e.CertPool(), true},
		{"CertFile", fromFile, true},
		{"empty pool", x509.NewCertPool(), false},
		{"system roots", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tt.roots}}
			defer tr.CloseIdleConnections()
			c := keysClient(t, v.URL(), cred, &http.Client{Transport: tr})
			_, err := c.GetKey(context.Background(), "k", "", nil)
			if tt.reaches {
				if err != nil {
					t.Errorf("GetKey: got %v, want the key", err)
				}
				return
			}
			var unknown x509.UnknownAuthorityError
			if !errors.As(err, &unknown) {
				t.Errorf("GetKey: got %v, want x509.UnknownAuthorityError", err)
			}
		})
	}
}

func TestTLS_CloseRemovesCertFile(t *testing.T) {
	e, err := emulator.Start(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := e.CertFile()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("CertFile before Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CertFile after Close: got %v, want it removed", err)
	}
}
