package main

import (
	"context"
	"fmt"
	"log/slog"
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
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		what := "system-assigned managed identity"
		if s.ClientID != "" {
			o.ID = azidentity.ClientID(s.ClientID)
			what = "user-assigned managed identity " + s.ClientID
		}
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

// credentialHint says what to check when the credential newCredential
// builds from s gets no token.
func credentialHint(s Settings) string {
	switch {
	case s.IdentityEndpoint != "" && s.ClientID != "":
		return "check that AZURE_CLIENT_ID is the client ID of a user-assigned identity assigned to the app"
	case s.IdentityEndpoint != "":
		return "the app's system-assigned identity was asked for; if the app has a user-assigned identity, " +
			"set AZURE_CLIENT_ID to its client ID"
	}
	return "IDENTITY_ENDPOINT is not set, so the default Azure credential was used: sign in with az login, " +
		"or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
}

// vaultScope is the token scope of every Key Vault in the public cloud;
// Key Vault's challenge names the resource https://vault.azure.net.
const vaultScope = "https://vault.azure.net/.default"

// credentialCheck asks the token endpoint for the tokens the rotation
// needs, so that an identity the endpoint refuses (a user-assigned
// identity without AZURE_CLIENT_ID, a wrong client ID, an identity not
// assigned to the app) is named plainly once, at start and in status,
// rather than inside every event's failure.
type credentialCheck struct {
	cred   azcore.TokenCredential
	what   string
	hint   string // what to check when no token comes; see credentialHint
	scopes []string
	log    *slog.Logger

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

// run checks every scope and logs when the verdict changes: one error
// line when the endpoint starts refusing, one info line when it accepts.
func (c *credentialCheck) run(ctx context.Context) handler.CredentialStatus {
	ctx, cancel := context.WithTimeout(ctx, credentialTimeout)
	defer cancel()

	st := handler.CredentialStatus{Checked: time.Now().UTC(), OK: true}
	for _, scope := range c.scopes {
		if _, err := c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}}); err != nil {
			st.OK = false
			st.Error = fmt.Sprintf("%s: no token for %s: %s", c.what, scope, oneLine(azure.TokenError(err).Error()))
			if c.hint != "" {
				st.Error += "; " + c.hint
			}
			break
		}
	}

	c.mu.Lock()
	prev := c.last
	c.last = st
	c.mu.Unlock()

	switch {
	case !st.OK && (prev.Checked.IsZero() || prev.OK):
		c.log.Error("credential refused: the token endpoint issues no token for this identity",
			"identity", c.what, "check", c.hint, "err", st.Error)
	case st.OK && (prev.Checked.IsZero() || !prev.OK):
		c.log.Info("credential ready", "identity", c.what)
	}
	return st
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
