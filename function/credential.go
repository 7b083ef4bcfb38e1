package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"golang.org/x/sync/singleflight"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/handler"
)

// newCredential returns the credential for Key Vault and Resource
// Manager: the managed identity when App Service announces one through
// IDENTITY_ENDPOINT (the user-assigned one of AZURE_CLIENT_ID when set),
// otherwise DefaultAzureCredential (environment, workload identity, Azure
// CLI, … on a developer machine).
func newCredential(s Settings, opts azcore.ClientOptions) (azcore.TokenCredential, string, error) {
	if s.IdentityEndpoint != "" {
		o, what := managedIdentityOptions(s, opts)
		cred, err := azidentity.NewManagedIdentityCredential(o)
		if err != nil {
			return nil, "", fmt.Errorf("create managed identity credential: %w", err)
		}
		return cred, what, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
		ClientOptions: opts,
	})
	if err != nil {
		return nil, "", fmt.Errorf("create default Azure credential: %w", err)
	}
	return cred, "default Azure credential", nil
}

// Retries of the App Service token endpoint. It is a local sidecar that
// answers in milliseconds: when it does not, waiting longer rarely helps,
// while azcore's defaults (3 retries from 800 ms, no per-try bound) spend
// about 9 s per token on a refused connection, and a command or status
// asks for several. Two quick retries ride out a restart of the endpoint;
// a try that has not answered in 5 s will not.
var identityRetry = policy.RetryOptions{
	MaxRetries:    2,
	RetryDelay:    200 * time.Millisecond,
	MaxRetryDelay: time.Second,
	TryTimeout:    5 * time.Second,
}

// managedIdentityOptions are the options of the managed identity
// credential for s, with identityRetry unless opts set retries of their
// own, and what the credential is called in messages.
func managedIdentityOptions(s Settings, opts azcore.ClientOptions) (*azidentity.ManagedIdentityCredentialOptions, string) {
	if opts.Retry.MaxRetries == 0 && opts.Retry.TryTimeout == 0 && opts.Retry.RetryDelay == 0 {
		opts.Retry = identityRetry
	}
	o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
	what := "system-assigned managed identity"
	if s.ClientID != "" {
		o.ID = azidentity.ClientID(s.ClientID)
		what = "user-assigned managed identity " + s.ClientID
	}
	return o, what
}

// credentialHint says what to check when the credential newCredential
// builds from s gets no token, for the failure err: an App Service token
// endpoint that does not answer, one that refuses IDENTITY_HEADER, or one
// that refuses the identity asked for.
func credentialHint(s Settings, err error) string {
	ae, _ := errors.AsType[*azidentity.AuthenticationFailedError](err)
	switch {
	case s.IdentityEndpoint != "" && unreachable(err):
		return "nothing answers at IDENTITY_ENDPOINT " + s.IdentityEndpoint + ": App Service sets it, with " +
			"IDENTITY_HEADER, for an app with a managed identity; outside App Service unset both to use " +
			"the default Azure credential"
	case s.IdentityEndpoint != "" && ae != nil && ae.RawResponse != nil && ae.RawResponse.StatusCode == http.StatusUnauthorized:
		return "the token endpoint refused IDENTITY_HEADER: App Service sets it, and changes it when the app " +
			"restarts; a value copied by hand into the app settings or a shell goes stale, so remove it " +
			"and let App Service set it"
	case s.IdentityEndpoint != "" && s.ClientID != "":
		return "check that AZURE_CLIENT_ID is the client ID of a user-assigned identity assigned to the app"
	case s.IdentityEndpoint != "":
		return "the app's system-assigned identity was asked for; if the app has a user-assigned identity, " +
			"set AZURE_CLIENT_ID to its client ID"
	}
	return "IDENTITY_ENDPOINT is not set, so the default Azure credential was used: sign in with az login, " +
		"or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
}

// unreachable reports whether err says the token endpoint gave no answer
// at all (refused connection, unknown host, timeout): azidentity then
// reports a failure without a response.
func unreachable(err error) bool {
	ae, ok := errors.AsType[*azidentity.AuthenticationFailedError](err)
	return ok && ae.RawResponse == nil || errors.Is(err, context.DeadlineExceeded)
}

// vaultScope is the token scope of every Key Vault in the public cloud;
// Key Vault's challenge names the resource https://vault.azure.net.
const vaultScope = "https://vault.azure.net/.default"

// credentialCheck asks the token endpoint for the tokens the rotation
// needs, so that an identity the endpoint refuses (a user-assigned
// identity without AZURE_CLIENT_ID, a wrong client ID, an identity not
// assigned to the app) or an endpoint that does not answer is named
// plainly once, at start and in status, rather than inside every event's
// failure.
type credentialCheck struct {
	cred azcore.TokenCredential
	what string
	hint func(error) string // what to check for a failure; see credentialHint
	// managed is set for App Service's managed identity, whose failures
	// without an answer mean its token endpoint is unreachable.
	managed bool
	scopes  []string
	log     *slog.Logger

	mu     sync.Mutex
	last   handler.CredentialStatus
	checks singleflight.Group // one check at a time, shared by the callers
}

func newCredentialCheck(cred azcore.TokenCredential, what, armAudience string, log *slog.Logger) *credentialCheck {
	if armAudience == "" {
		armAudience = "https://management.core.windows.net/"
	}
	// azcore's ARM pipeline asks for audience + "/.default".
	return &credentialCheck{
		cred:   cred,
		what:   what,
		scopes: []string{armAudience + "/.default", vaultScope},
		log:    log,
	}
}

// credentialTimeout bounds one check: a token endpoint that has not
// answered by then will not help an operator reading the status.
const credentialTimeout = 15 * time.Second

// check asks for a token of every scope and returns the verdict, logging
// nothing: for a command that prints the verdict itself (status).
func (c *credentialCheck) check(ctx context.Context) handler.CredentialStatus {
	st, _, _ := c.verdict(ctx)
	return st
}

// run is check, and logs when the verdict changes: one error line when
// the endpoint starts refusing or stops answering, one info line when it
// accepts.
func (c *credentialCheck) run(ctx context.Context) handler.CredentialStatus {
	st, prev, err := c.verdict(ctx)
	switch {
	case !st.OK && (prev.Checked.IsZero() || prev.OK || prev.Unreachable != st.Unreachable):
		hint := ""
		if c.hint != nil {
			hint = c.hint(err)
		}
		msg := "credential refused: the token endpoint issues no token for this identity"
		if st.Unreachable {
			msg = "credential check failed: token endpoint unreachable"
		}
		c.log.Error(msg, "identity", c.what, "hint", hint, "err", oneLine(azure.TokenError(err).Error()))
	case st.OK && (prev.Checked.IsZero() || !prev.OK):
		c.log.Info("credential ready", "identity", c.what)
	}
	return st
}

// verdict checks every scope, remembers the verdict and returns it with
// the one before and the failure.
func (c *credentialCheck) verdict(ctx context.Context) (st, prev handler.CredentialStatus, err error) {
	ctx, cancel := context.WithTimeout(ctx, credentialTimeout)
	defer cancel()

	st = handler.CredentialStatus{Checked: time.Now().UTC(), OK: true}
	for _, scope := range c.scopes {
		if _, err = c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}}); err != nil {
			st.OK, st.Unreachable = false, c.managed && unreachable(err)
			what := oneLine(azure.TokenError(err).Error())
			if st.Unreachable {
				what = "token endpoint unreachable: " + what
			}
			st.Error = fmt.Sprintf("%s: no token for %s: %s", c.what, scope, what)
			if c.hint != nil {
				st.Error += "; " + c.hint(err)
			}
			break
		}
	}

	c.mu.Lock()
	prev = c.last
	c.last = st
	c.mu.Unlock()
	return st, prev, err
}

// status returns the last verdict, checking again when it is older than a
// minute (tokens are cached, so a check is cheap when all is well).
// Concurrent callers share one check, which outlives any one caller's
// ctx (bounded by credentialTimeout); a caller whose ctx ends first gets
// the last verdict, or a refusal saying the check did not finish.
func (c *credentialCheck) status(ctx context.Context) handler.CredentialStatus {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	if !last.Checked.IsZero() && time.Since(last.Checked) < time.Minute {
		return last
	}

	ch := c.checks.DoChan("check", func() (any, error) {
		return c.run(context.WithoutCancel(ctx)), nil
	})
	select {
	case res := <-ch:
		return res.Val.(handler.CredentialStatus)
	case <-ctx.Done():
	}
	if !last.Checked.IsZero() {
		return last
	}
	return handler.CredentialStatus{Checked: time.Now().UTC(),
		Error: fmt.Sprintf("%s: the token check did not finish: %v", c.what, ctx.Err())}
}

// oneLine folds a multi-line SDK error (azidentity's include response
// dumps) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
