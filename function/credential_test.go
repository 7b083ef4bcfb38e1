package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// slowToken answers once release is closed, or fails when the request's
// context ends first; it counts the requests.
type slowToken struct {
	release chan struct{}
	calls   atomic.Int32
}

func (s *slowToken) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.calls.Add(1)
	select {
	case <-s.release:
		return azcore.AccessToken{Token: "t", ExpiresOn: time.Now().Add(time.Hour)}, nil
	case <-ctx.Done():
		return azcore.AccessToken{}, ctx.Err()
	}
}

func newSlowCheck() (*credentialCheck, *slowToken) {
	cred := &slowToken{release: make(chan struct{})}
	return newCredentialCheck(cred, "test identity", "", slog.New(slog.NewTextHandler(io.Discard, nil))), cred
}

// TestCredentialStatus_ConcurrentCallersShareOneCheck: callers arriving
// while a check runs wait for it rather than starting their own.
func TestCredentialStatus_ConcurrentCallersShareOneCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, cred := newSlowCheck()
		const callers = 8
		got := make([]bool, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() { got[i] = c.status(t.Context()).OK })
		}
		synctest.Wait()
		if n := cred.calls.Load(); n != 1 {
			t.Errorf("got %d token requests while the check runs, want 1", n)
		}

		close(cred.release)
		wg.Wait()
		if n := cred.calls.Load(); n != int32(len(c.scopes)) {
			t.Errorf("got %d token requests, want %d: one check for every caller", n, len(c.scopes))
		}
		for i, ok := range got {
			if !ok {
				t.Errorf("caller %d: got not ok, want the shared verdict ok", i)
			}
		}
	})
}

// TestCredentialStatus_WaitsNoLongerThanTheRequest: a caller whose
// context ends before the token endpoint answers gets an answer then,
// not after the check's own 15 s.
func TestCredentialStatus_WaitsNoLongerThanTheRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newSlowCheck()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()

		st := c.status(ctx)

		if waited := time.Since(start); waited != time.Second {
			t.Errorf("got an answer after %v, want 1s", waited)
		}
		if st.OK || st.Error == "" {
			t.Errorf("got %+v, want a refusal saying the check did not finish", st)
		}
		// The shared check goes on to its own bound, then ends.
		time.Sleep(credentialTimeout)
		synctest.Wait()
	})
}

// TestCredentialHint: the hint names what to check for the credential
// actually in use.
func TestCredentialHint(t *testing.T) {
	for _, tt := range []struct {
		name string
		s    Settings
		want string
	}{
		{"user-assigned", Settings{IdentityEndpoint: "http://127.0.0.1:1/msi/token", ClientID: "c"}, "AZURE_CLIENT_ID is the client ID"},
		{"system-assigned", Settings{IdentityEndpoint: "http://127.0.0.1:1/msi/token"}, "set AZURE_CLIENT_ID"},
		{"default", Settings{}, "az login"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := credentialHint(tt.s); !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to say %q", got, tt.want)
			}
		})
	}
}
