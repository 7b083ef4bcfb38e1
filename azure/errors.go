package azure

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// classify wraps err from operation op with the rotation sentinel that
// says whether a retry could succeed.
func classify(op string, err error) error {
	if ce, ok := certificateFailure(err); ok {
		// A trust store that lacks the endpoint's issuer, or a
		// certificate for another name, stays so: retrying cannot help.
		return fmt.Errorf("%s: %w", op, ce)
	}
	if ce, ok := credentialFailure(err); ok {
		// The identity endpoint or Entra ID refused or could not be
		// reached; permissions and identities propagate, so retry.
		return fmt.Errorf("%s: %w: %w", op, rotation.ErrRetryable, ce)
	}
	if re, ok := errors.AsType[*azcore.ResponseError](err); ok {
		rerr := responseError{re: re}
		if re.StatusCode == http.StatusForbidden && !keyDisabled(re) {
			rerr.hint = permissionHint(re.RawResponse)
		}
		err = rerr
		switch code := re.StatusCode; {
		case code == http.StatusNotFound:
			return fmt.Errorf("%s: %w: %w", op, rotation.ErrNotFound, err)
		case code == http.StatusForbidden && keyDisabled(re):
			return fmt.Errorf("%s: %w: %w", op, rotation.ErrDisabled, err)
		case code == http.StatusTooManyRequests && pastDeadline(re.RawResponse):
			// Only a wait past the deadline stops the rotation's other
			// servers; a shorter one was retried and ran out of tries.
			return fmt.Errorf("%s: %w", op, &rotation.RetryAfterError{After: retryAfter(re.RawResponse), Err: err})
		case code == http.StatusTooManyRequests:
			return fmt.Errorf("%s: %w: %w: %w", op, rotation.ErrRetryable, rotation.ErrThrottled, err)
		case code == http.StatusRequestTimeout, code == http.StatusConflict,
			code >= 500, code == http.StatusUnauthorized, code == http.StatusForbidden:
			return fmt.Errorf("%s: %w: %w", op, rotation.ErrRetryable, err)
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	// Transport failures, timeouts of one try, and credential errors
	// (the identity endpoint is a local service that recovers).
	return fmt.Errorf("%s: %w: %w", op, rotation.ErrRetryable, err)
}

// certificateError keeps a TLS certificate verification failure in the
// chain but prints one line: what failed, and what to check.
type certificateError struct {
	msg string
	err error
}

func (e *certificateError) Error() string { return e.msg }

func (e *certificateError) Unwrap() error { return e.err }

// certificateFailure returns err as a *certificateError when the
// endpoint's TLS certificate failed verification: an unknown issuer, a
// name it is not valid for, or a certificate otherwise invalid (expired,
// not for server authentication).
func certificateFailure(err error) (*certificateError, bool) {
	var why string
	if e, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		why = e.Error()
	} else if e, ok := errors.AsType[x509.HostnameError](err); ok {
		why = e.Error()
	} else if e, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		why = e.Error()
	} else if e, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		why = e.Error()
	} else {
		return nil, false
	}
	host := "the endpoint"
	if ue, ok := errors.AsType[*url.Error](err); ok {
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			host = u.Host
		}
	}
	msg := "TLS certificate of " + host + " not trusted: " + why +
		"; retrying will not help: check the endpoint's certificate and the trust store (SSL_CERT_FILE)"
	return &certificateError{msg: msg, err: err}, true
}

// responseError keeps an *azcore.ResponseError in the chain but prints
// one line: the SDK's own text spans the whole response, too much for a
// per-server report. A hint, when set, says what a person should check.
type responseError struct {
	re   *azcore.ResponseError
	hint string
}

func (e responseError) Error() string {
	msg := strconv.Itoa(e.re.StatusCode)
	if e.re.ErrorCode != "" {
		msg += " " + e.re.ErrorCode
	}
	if r := e.re.RawResponse; r != nil && r.Request != nil {
		msg = r.Request.Method + " " + r.Request.URL.Path + ": " + msg
	}
	if e.hint != "" {
		msg += "; " + e.hint
	}
	return msg
}

// permissionHint names the permission a 403 from Key Vault or Resource
// Manager most likely lacks, from the request it answers: key read on
// the key, or read or write of Fluid Relay servers. The deployment grants
// each with a role of its own; a grant just made can take minutes to
// apply, which is why the refusal stays retryable. Empty for other
// services.
func permissionHint(resp *http.Response) string {
	if resp == nil || resp.Request == nil {
		return ""
	}
	req := resp.Request
	path := strings.ToLower(req.URL.Path)
	switch {
	case strings.HasPrefix(path, "/keys/"):
		return "the identity needs the data action Microsoft.KeyVault/vaults/keys/read on the key " +
			"(the key metadata reader role the deployment assigns); a new assignment can take minutes to apply"
	case strings.HasPrefix(path, "/subscriptions/") &&
		strings.Contains(path, "/providers/microsoft.fluidrelay/fluidrelayservers"):
		action, scope := "read", "the server's resource group"
		if req.Method != http.MethodGet {
			action = "write"
		}
		if strings.HasSuffix(strings.TrimSuffix(path, "/"), "/fluidrelayservers") {
			scope = "the listed scope"
		}
		return "the identity needs Microsoft.FluidRelay/fluidRelayServers/" + action + " on " + scope +
			" (the Fluid Relay key rotator role the deployment assigns); a new assignment can take minutes to apply"
	}
	return ""
}

func (e responseError) Unwrap() error { return e.re }

// credentialError keeps a credential's error in the chain but prints one
// line naming the credential and what went wrong: azidentity's own text
// spans the whole token response, dashes and indented JSON included.
type credentialError struct {
	msg string
	err error
}

func (e *credentialError) Error() string { return e.msg }

func (e *credentialError) Unwrap() error { return e.err }

// TokenError returns an error from a credential's GetToken as one line
// naming the credential and what its token endpoint said, with the
// original in its chain; other errors come back as they are.
func TokenError(err error) error {
	if ce, ok := credentialFailure(err); ok {
		return ce
	}
	return err
}

// credentialFailure returns err as a *credentialError when a credential
// failed to get a token: azidentity's *AuthenticationFailedError, or a
// credential reporting itself unavailable.
func credentialFailure(err error) (*credentialError, bool) {
	if ae, ok := errors.AsType[*azidentity.AuthenticationFailedError](err); ok {
		name, msg := credentialText(ae.Error())
		if resp := ae.RawResponse; resp != nil {
			msg = fmt.Sprintf("%s refused (%d): %s", name, resp.StatusCode, tokenErrorMessage(resp))
		} else {
			msg = name + " failed: " + msg
		}
		return &credentialError{msg: "get token: " + msg, err: err}, true
	}
	if ue, ok := credentialUnavailable(err); ok {
		name, msg := credentialText(ue.Error())
		return &credentialError{msg: "get token: " + name + " unavailable: " + msg, err: err}, true
	}
	return nil, false
}

// credentialUnavailable finds the error azidentity returns when a
// credential cannot try at all (no identity endpoint, no configuration).
// Its type is unexported; it is the innermost error of the chain and
// marks itself NonRetriable, which no other error under a token request
// does.
func credentialUnavailable(err error) (error, bool) {
	for err != nil {
		next := errors.Unwrap(err)
		if next == nil {
			_, marked := err.(interface{ NonRetriable() })
			_, unavailable := err.(*azidentity.AuthenticationRequiredError)
			return err, marked || unavailable
		}
		err = next
	}
	return nil, false
}

// credentialNames are how messages name the credentials azidentity
// reports by type name.
var credentialNames = map[string]string{
	"ManagedIdentityCredential":   "managed identity",
	"WorkloadIdentityCredential":  "workload identity",
	"DefaultAzureCredential":      "default credential",
	"ChainedTokenCredential":      "credential chain",
	"ClientSecretCredential":      "client secret",
	"ClientCertificateCredential": "client certificate",
	"AzureCLICredential":          "Azure CLI",
	"AzureDeveloperCLICredential": "Azure Developer CLI",
}

// credentialText splits an azidentity message, "<Type>: <message>" or
// "<Type> authentication failed. <message>\n…", into the credential's
// name and the rest of the first line.
func credentialText(s string) (name, msg string) {
	line, _, _ := strings.Cut(s, "\n")
	typ, rest, ok := strings.Cut(line, " ")
	typ = strings.TrimSuffix(typ, ":")
	if !ok || !strings.HasSuffix(typ, "Credential") {
		return "credential", strings.TrimSpace(line)
	}
	rest = strings.TrimPrefix(strings.TrimSpace(rest), "authentication failed.")
	if n, ok := credentialNames[typ]; ok {
		typ = n
	}
	return typ, strings.TrimSpace(rest)
}

// tokenErrorMessage returns the message of a token endpoint's error body:
// App Service's {"message"}, Entra ID's and IMDS's {"error_description"}
// or {"error"}, or the status text when the body says nothing readable.
func tokenErrorMessage(resp *http.Response) string {
	body, err := runtime.Payload(resp)
	if err == nil {
		var b struct {
			Message     string          `json:"message"`
			Description string          `json:"error_description"`
			Error       json.RawMessage `json:"error"`
		}
		if json.Unmarshal(body, &b) == nil {
			var code string
			var nested struct {
				Message string `json:"message"`
			}
			_ = json.Unmarshal(b.Error, &code)
			_ = json.Unmarshal(b.Error, &nested)
			for _, m := range []string{b.Message, b.Description, nested.Message, code} {
				if m = strings.Join(strings.Fields(m), " "); m != "" {
					return m
				}
			}
		}
	}
	return http.StatusText(resp.StatusCode)
}

// keyDisabled reports whether Key Vault refused because the key version is
// disabled: 403 with the inner error code KeyDisabled.
func keyDisabled(re *azcore.ResponseError) bool {
	if re.ErrorCode == "KeyDisabled" {
		return true
	}
	if re.RawResponse == nil {
		return false
	}
	body, err := runtime.Payload(re.RawResponse)
	if err != nil {
		return false
	}
	var e struct {
		Error struct {
			InnerError struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	return json.Unmarshal(body, &e) == nil && e.Error.InnerError.Code == "KeyDisabled"
}

// retryAfter returns how long a response asks the caller to wait, from
// retry-after-ms, x-ms-retry-after-ms or Retry-After (seconds or a date);
// zero when it does not say.
func retryAfter(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	for _, h := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if ms, err := strconv.Atoi(resp.Header.Get(h)); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := resp.Header.Get("Retry-After")
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// Retry settings shared by both adapters. Retries are azcore's; these
// values bound them to fit one Event Grid delivery (30 s).
const (
	// azcore waits (2^try − 1) × RetryDelay before try n, jittered by
	// 0.8–1.3: three retries from 0.5 s wait 0.5 + 1.5 + 3.5 = 5.5 s
	// (at most about 7 s), riding out a throttling burst or an in-flight
	// ARM update and leaving most of the default 25 s deadline for the
	// PATCH and its confirmation.
	retryMax   = 3
	retryDelay = 500 * time.Millisecond
	// A Retry-After longer than 15 s is better answered by Event Grid's
	// own redelivery (10 s, 30 s, 1 min, …) than by holding the call.
	retryMaxDelay = 15 * time.Second
)

// retryOptions fills the zero fields of o with the settings above and, when
// o has no ShouldRetry, retries codes plus transport errors, but never a
// failed certificate verification (it never heals) nor a response whose
// Retry-After outlasts the request's deadline.
func retryOptions(o policy.RetryOptions, codes ...int) policy.RetryOptions {
	if o.MaxRetries == 0 {
		o.MaxRetries = retryMax
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = retryDelay
	}
	if o.MaxRetryDelay == 0 {
		o.MaxRetryDelay = retryMaxDelay
	}
	if o.ShouldRetry == nil {
		o.ShouldRetry = func(resp *http.Response, err error) bool {
			if err != nil {
				_, cert := certificateFailure(err)
				return !cert
			}
			if !runtime.HasStatusCode(resp, codes...) {
				return false
			}
			return !pastDeadline(resp)
		}
	}
	return o
}

// pastDeadline reports whether the wait resp asks for ends after its
// request's deadline. (No TryTimeout is set, so the request's context is
// the caller's.)
func pastDeadline(resp *http.Response) bool {
	wait := retryAfter(resp)
	if wait <= 0 || resp.Request == nil {
		return false
	}
	deadline, ok := resp.Request.Context().Deadline()
	return ok && time.Until(deadline) < wait
}

// transient are the status codes azcore retries by default.
var transient = []int{
	http.StatusRequestTimeout,
	http.StatusTooManyRequests,
	http.StatusInternalServerError,
	http.StatusBadGateway,
	http.StatusServiceUnavailable,
	http.StatusGatewayTimeout,
}
