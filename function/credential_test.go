package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cmkrotator/cmkrotator/internal/logcheck"
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

func newSlowCheck(t *testing.T) (*credentialCheck, *slowToken) {
	cred := &slowToken{release: make(chan struct{})}
	return newCredentialCheck(cred, "test identity", "", logcheck.Logger(t)), cred
}

// TestCredentialStatus_ConcurrentCallersShareOneCheck: callers arriving
// while a check runs wait for it rather than starting their own.
func TestCredentialStatus_ConcurrentCallersShareOneCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, cred := newSlowCheck(t)
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
		c, _ := newSlowCheck(t)
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
// actually in use and the way it failed.
func TestCredentialHint(t *testing.T) {
	const ep = "http://127.0.0.1:1/msi/token"
	answered := func(status int) error {
		return &azidentity.AuthenticationFailedError{RawResponse: &http.Response{StatusCode: status}}
	}
	for _, tt := range []struct {
		name    string
		s       Settings
		err     error
		want    string
		notWant string
	}{
		{"user-assigned refused", Settings{IdentityEndpoint: ep, ClientID: "c"}, answered(400), "AZURE_CLIENT_ID is the client ID", "IDENTITY_HEADER"},
		{"system-assigned refused", Settings{IdentityEndpoint: ep}, answered(400), "set AZURE_CLIENT_ID", "IDENTITY_HEADER"},
		{"identity header refused", Settings{IdentityEndpoint: ep, ClientID: "c"}, answered(401), "refused IDENTITY_HEADER: App Service sets it", "AZURE_CLIENT_ID"},
		{"endpoint unreachable", Settings{IdentityEndpoint: ep, ClientID: "c"}, &azidentity.AuthenticationFailedError{},
			"nothing answers at IDENTITY_ENDPOINT " + ep, "AZURE_CLIENT_ID is"},
		{"endpoint too slow", Settings{IdentityEndpoint: ep}, fmt.Errorf("get token: %w", context.DeadlineExceeded),
			"nothing answers at IDENTITY_ENDPOINT", "set AZURE_CLIENT_ID"},
		{"default", Settings{}, answered(401), "az login", "IDENTITY_HEADER"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := credentialHint(tt.s, tt.err)
			if !strings.Contains(got, tt.want) || strings.Contains(got, tt.notWant) {
				t.Errorf("got %q, want it to say %q and not %q", got, tt.want, tt.notWant)
			}
		})
	}
}

// TestIdentityRetries: the managed identity credential retries its local
// token endpoint briefly, unless the caller set retries of its own.
func TestIdentityRetries(t *testing.T) {
	s := Settings{IdentityEndpoint: "http://127.0.0.1:1/msi/token"}
	o, _ := managedIdentityOptions(s, azcore.ClientOptions{})
	if r := o.Retry; r.MaxRetries != 2 || r.TryTimeout != 5*time.Second || r.RetryDelay != 200*time.Millisecond || r.MaxRetryDelay != time.Second {
		t.Errorf("got %+v, want 2 retries from 200ms to 1s, 5s a try", r)
	}
	o, _ = managedIdentityOptions(s, azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}})
	if o.Retry.MaxRetries != -1 {
		t.Errorf("got %+v, want the caller's retries", o.Retry)
	}
}

// TestCredentialCheck_LogsTheHintOnce: a refusal is logged once, the hint
// in its own attribute and not again inside the error; check alone logs
// nothing.
func TestCredentialCheck_LogsTheHintOnce(t *testing.T) {
	var logs strings.Builder
	c := newCredentialCheck(refusing{}, "test identity", "", slog.New(slog.NewTextHandler(logcheck.Writer(t, &logs), nil)))
	c.hint = func(error) string { return "check the thing" }
	c.managed = true

	if st := c.check(t.Context()); st.OK || !strings.Contains(st.Error, "check the thing") {
		t.Errorf("got %+v, want a refusal with the hint", st)
	}
	if logs.Len() != 0 {
		t.Errorf("check logged %q, want nothing", logs.String())
	}
	c = newCredentialCheck(refusing{}, "test identity", "", slog.New(slog.NewTextHandler(logcheck.Writer(t, &logs), nil)))
	c.hint = func(error) string { return "check the thing" }
	c.run(t.Context())
	if got := strings.Count(logs.String(), "check the thing"); got != 1 {
		t.Errorf("got the hint %d times in\n%s\nwant once", got, logs.String())
	}
}

// refusing is a credential whose token endpoint answers 400.
type refusing struct{}

func (refusing) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, &azidentity.AuthenticationFailedError{RawResponse: &http.Response{StatusCode: 400, Status: "400 Bad Request"}}
}
