package emulator_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// start starts an emulator closed at the end of the test.
func start(t *testing.T) *emulator.Emulator {
	t.Helper()
	e, err := emulator.Start(emulator.Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// credential is the function's managed identity credential, configured
// through the environment as on App Service. Tests using it cannot run in
// parallel.
func credential(t *testing.T, e *emulator.Emulator, tr policy.Transporter) azcore.TokenCredential {
	t.Helper()
	t.Setenv("IDENTITY_ENDPOINT", e.IdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", e.IdentityHeader())
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ID:            azidentity.ClientID(e.ClientID()),
		ClientOptions: azcore.ClientOptions{Transport: tr},
	})
	if err != nil {
		t.Fatalf("NewManagedIdentityCredential: %v", err)
	}
	return cred
}

func noRetry() policy.RetryOptions { return policy.RetryOptions{MaxRetries: -1} }

func keysClient(t *testing.T, vaultURL string, cred azcore.TokenCredential,
	tr policy.Transporter) *azkeys.Client {
	t.Helper()
	c, err := azkeys.NewClient(vaultURL, cred, &azkeys.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: tr, Retry: noRetry()},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatalf("azkeys.NewClient: %v", err)
	}
	return c
}

func armClient(t *testing.T, e *emulator.Emulator, cred azcore.TokenCredential,
	tr policy.Transporter) *arm.Client {
	t.Helper()
	c, err := arm.NewClient("emulator.test", "v0.0.1", cred, &arm.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud: cloud.Configuration{Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: e.ARMEndpoint(),
					Audience: "https://management.core.windows.net/"},
			}},
			Transport: tr,
			Retry:     noRetry(),
		},
		DisableRPRegistration: true,
	})
	if err != nil {
		t.Fatalf("arm.NewClient: %v", err)
	}
	return c
}

// armCall sends one ARM request through the client's pipeline with
// api-version 2022-06-01 and decodes a 200 answer into out (when not nil).
// Other statuses come back as *azcore.ResponseError.
func armCall(ctx context.Context, c *arm.Client, method, path string, body, out any) (
	*http.Response, error) {
	return armCallVersion(ctx, c, method, path, emulator.APIVersion, body, out)
}

// rawJSON is a request body sent as it is, so that it may be malformed.
type rawJSON string

func armCallVersion(ctx context.Context, c *arm.Client, method, path, version string,
	body, out any) (*http.Response, error) {
	u := path
	if !strings.HasPrefix(path, "https://") {
		u = runtime.JoinPaths(c.Endpoint(), path)
	}
	req, err := runtime.NewRequest(ctx, method, u)
	if err != nil {
		return nil, err
	}
	if version != "" {
		q := req.Raw().URL.Query()
		q.Set("api-version", version)
		req.Raw().URL.RawQuery = q.Encode()
	}
	req.Raw().Header.Set("Accept", "application/json")
	switch b := body.(type) {
	case nil:
	case rawJSON:
		err = req.SetBody(streaming.NopCloser(strings.NewReader(string(b))), "application/json")
	default:
		err = runtime.MarshalAsJSON(req, body)
	}
	if err != nil {
		return nil, err
	}
	resp, err := c.Pipeline().Do(req)
	if err != nil {
		return nil, err
	}
	if !runtime.HasStatusCode(resp, http.StatusOK, http.StatusNoContent) {
		return resp, runtime.NewResponseError(resp)
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := runtime.UnmarshalAsJSON(resp, out); err != nil {
			return resp, err
		}
	}
	return resp, nil
}

// errorCode returns the status and code of an *azcore.ResponseError.
func errorCode(t *testing.T, err error) (int, string) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("got error %v, want *azcore.ResponseError", err)
	}
	return re.StatusCode, re.ErrorCode
}
