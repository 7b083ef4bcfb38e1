package azure_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// countingClient is an HTTP client that counts the requests it sends over
// HTTPS (Key Vault and Resource Manager; the identity endpoint is plain).
type countingClient struct {
	c     *http.Client
	tries atomic.Int32
}

func (c *countingClient) Do(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "https" {
		c.tries.Add(1)
	}
	return c.c.Do(req)
}

// A certificate that fails verification is final at once: a wrong trust
// store, or a certificate for another name, never heals by retrying.
func TestCertificateNotTrusted_FinalAtOnce(t *testing.T) {
	tests := []struct {
		name string
		tls  func(f *fixture) *tls.Config
		says string
	}{
		{"unknown authority", func(f *fixture) *tls.Config {
			return &tls.Config{RootCAs: x509.NewCertPool()}
		}, "unknown authority"},
		{"another host name", func(f *fixture) *tls.Config {
			return &tls.Config{RootCAs: f.emu.CertPool(), ServerName: "kv1.vault.azure.net"}
		}, "not kv1.vault.azure.net"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, 1)
			client := &countingClient{c: &http.Client{Transport: &http.Transport{TLSClientConfig: tt.tls(f)}}}
			keys, relays := f.adapters(t, client)

			_, kerr := keys.Key(t.Context(), f.key)
			keyTries := client.tries.Swap(0)
			_, serr := relays.Get(t.Context(), f.ids[0])
			serverTries := client.tries.Swap(0)

			for _, c := range []struct {
				what  string
				err   error
				tries int32
			}{{"key vault", kerr, keyTries}, {"resource manager", serr, serverTries}} {
				if c.err == nil || errors.Is(c.err, rotation.ErrRetryable) || errors.Is(c.err, rotation.ErrNotFound) {
					t.Errorf("%s: got %v, want a final error", c.what, c.err)
				}
				if _, ok := errors.AsType[*tls.CertificateVerificationError](c.err); !ok {
					t.Errorf("%s: got %v, want a *tls.CertificateVerificationError in the chain", c.what, c.err)
				}
				if msg := c.err.Error(); !strings.Contains(msg, tt.says) || !strings.Contains(msg, "SSL_CERT_FILE") ||
					strings.Contains(msg, "\n") {
					t.Errorf("%s: got %q, want one line naming %q and SSL_CERT_FILE", c.what, msg, tt.says)
				}
				if c.tries != 1 {
					t.Errorf("%s: got %d tries, want 1", c.what, c.tries)
				}
			}

			r := f.rotatorOver(t, client, nil)
			rep := r.Rotate(t.Context(), rotation.Request{Key: f.key})
			if rep.Error == "" || rep.Retryable || !rep.Final() {
				t.Errorf("rotation: got error %q retryable %v, want a final key error", rep.Error, rep.Retryable)
			}
		})
	}
}
