package azure

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/cmkrotator/cmkrotator/rotation"
)

const (
	apiVersion      = "2022-06-01"
	defaultEndpoint = "https://management.azure.com"
	defaultAudience = "https://management.core.windows.net/"
	moduleName      = "cmkrotator/azure"
	moduleVersion   = "v1.0.0"
)

// FluidRelayOptions configures a FluidRelay. The zero value speaks to the
// public cloud.
type FluidRelayOptions struct {
	Endpoint string // Resource Manager endpoint; zero: https://management.azure.com
	Audience string // token audience; zero: https://management.core.windows.net/
	// ClientOptions: Transport, Logging, Retry. Zero retry fields get
	// the adapter's bounded defaults; 409 is retried as well, since ARM
	// answers it while another update of the server is in flight.
	ClientOptions azcore.ClientOptions
}

// FluidRelay implements rotation.Servers over Resource Manager,
// api-version 2022-06-01. It is safe for concurrent use.
type FluidRelay struct {
	client   *arm.Client
	endpoint string
}

var _ rotation.Servers = (*FluidRelay)(nil)

// NewFluidRelay returns a FluidRelay that authenticates with cred.
func NewFluidRelay(cred azcore.TokenCredential, opts *FluidRelayOptions) (*FluidRelay, error) {
	var o FluidRelayOptions
	if opts != nil {
		o = *opts
	}
	o.Endpoint = strings.TrimSuffix(orDefault(o.Endpoint, defaultEndpoint), "/")
	o.Audience = orDefault(o.Audience, defaultAudience)

	co := o.ClientOptions
	co.Cloud.Services = map[cloud.ServiceName]cloud.ServiceConfiguration{
		cloud.ResourceManager: {Endpoint: o.Endpoint, Audience: o.Audience},
	}
	co = pipelineOptions(co, append(transient, http.StatusConflict)...)
	c, err := arm.NewClient(moduleName, moduleVersion, cred, &arm.ClientOptions{
		ClientOptions:         co,
		DisableRPRegistration: true,
	})
	if err != nil {
		return nil, fmt.Errorf("new fluid relay client: %w", err)
	}
	return &FluidRelay{client: c, endpoint: o.Endpoint}, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Get reads one server by its resource ID, once only when ctx is marked
// by rotation.NoWait.
func (f *FluidRelay) Get(ctx context.Context, id string) (rotation.Server, error) {
	if rotation.IsNoWait(ctx) {
		ctx = policy.WithRetryOptions(ctx, policy.RetryOptions{MaxRetries: -1})
	}
	var s server
	if err := f.do(ctx, http.MethodGet, f.endpoint+id, nil, &s); err != nil {
		return rotation.Server{}, classify("get server "+id, err)
	}
	return s.domain(), nil
}

// SetKeyURL PATCHes the server's key URL with the minimal body and returns
// the server as the response describes it.
func (f *FluidRelay) SetKeyURL(ctx context.Context, id, keyURL string) (rotation.Server, error) {
	body := serverUpdate{Properties: &updateProperties{Encryption: &encryption{
		CustomerManagedKeyEncryption: &cmkEncryption{KeyEncryptionKeyURL: keyURL},
	}}}
	var s server
	if err := f.do(ctx, http.MethodPatch, f.endpoint+id, body, &s); err != nil {
		return rotation.Server{}, classify("update key URL of "+id, err)
	}
	return s.domain(), nil
}

// List returns every server in a subscription or resource group scope,
// following nextLink.
func (f *FluidRelay) List(ctx context.Context, scope string) ([]rotation.Server, error) {
	url := f.endpoint + strings.TrimSuffix(scope, "/") + "/providers/Microsoft.FluidRelay/fluidRelayServers"
	var out []rotation.Server
	for url != "" {
		var page serverList
		if err := f.do(ctx, http.MethodGet, url, nil, &page); err != nil {
			return nil, classify("list servers in "+scope, err)
		}
		for _, s := range page.Value {
			out = append(out, s.domain())
		}
		url = page.NextLink
	}
	return out, nil
}

// do sends one request through the ARM pipeline and decodes a 200 into out.
// An error its context ended says what the last try failed with.
func (f *FluidRelay) do(ctx context.Context, method, url string, body, out any) error {
	ctx, tries := withLastTry(ctx)
	req, err := runtime.NewRequest(ctx, method, url)
	if err != nil {
		return err
	}
	if !strings.Contains(url, "api-version=") {
		q := req.Raw().URL.Query()
		q.Set("api-version", apiVersion)
		req.Raw().URL.RawQuery = q.Encode()
	}
	req.Raw().Header.Set("Accept", "application/json")
	if body != nil {
		if err := runtime.MarshalAsJSON(req, body); err != nil {
			return err
		}
	}
	resp, err := f.client.Pipeline().Do(req)
	if err != nil {
		return tries.explain(err)
	}
	if !runtime.HasStatusCode(resp, http.StatusOK) {
		return runtime.NewResponseError(resp)
	}
	if err := runtime.UnmarshalAsJSON(resp, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// Models from the Fluid Relay swagger, 2022-06-01, reduced to the fields
// the rotation reads or writes.
type (
	server struct {
		ID         string            `json:"id"`
		Name       string            `json:"name"`
		Properties *serverProperties `json:"properties,omitempty"`
	}
	serverProperties struct {
		ProvisioningState string      `json:"provisioningState,omitempty"`
		Encryption        *encryption `json:"encryption,omitempty"`
	}
	encryption struct {
		CustomerManagedKeyEncryption *cmkEncryption `json:"customerManagedKeyEncryption,omitempty"`
	}
	cmkEncryption struct {
		KeyEncryptionKeyURL string `json:"keyEncryptionKeyUrl,omitempty"`
	}
	// serverUpdate is FluidRelayServerUpdate; only encryption is sent.
	serverUpdate struct {
		Properties *updateProperties `json:"properties"`
	}
	updateProperties struct {
		Encryption *encryption `json:"encryption"`
	}
	serverList struct {
		Value    []server `json:"value"`
		NextLink string   `json:"nextLink,omitempty"`
	}
)

func (s server) domain() rotation.Server {
	out := rotation.Server{ID: s.ID}
	if p := s.Properties; p != nil {
		out.ProvisioningState = p.ProvisioningState
		if e := p.Encryption; e != nil && e.CustomerManagedKeyEncryption != nil {
			out.KeyURL = e.CustomerManagedKeyEncryption.KeyEncryptionKeyURL
		}
	}
	return out
}
