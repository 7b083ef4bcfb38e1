package azure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// When an operation's deadline ends while azcore waits to try again,
// azcore returns the context's error alone: "context deadline exceeded",
// with nothing on what the tries were failing with. A lastTry, carried
// by the operation's context, keeps the outcome of its latest try, so
// that the error can say (connection refused, 503, …).

// lastTry is what the latest try of one operation ended with. It is safe
// for concurrent use.
type lastTry struct {
	mu      sync.Mutex
	failure string // "" when the latest try got a response below 400
	reached bool   // some try reached the service (a response, or a failure after connecting)
}

type lastTryKey struct{}

// withLastTry returns ctx carrying a new lastTry for one operation.
func withLastTry(ctx context.Context) (context.Context, *lastTry) {
	lt := &lastTry{}
	return context.WithValue(ctx, lastTryKey{}, lt), lt
}

// lastTryPolicy records every try in the lastTry of the request's
// context, if it has one. It runs once per try.
type lastTryPolicy struct{}

func (lastTryPolicy) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	if lt, ok := req.Raw().Context().Value(lastTryKey{}).(*lastTry); ok {
		lt.record(resp, err)
	}
	return resp, err
}

func (lt *lastTry) record(resp *http.Response, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return // the operation's own end, not what the service did
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	switch {
	case err != nil:
		lt.failure = tryFailure(err)
		lt.reached = lt.reached || !dialFailure(err)
	case resp.StatusCode >= 400:
		lt.failure = resp.Status
		lt.reached = true
	default:
		lt.failure, lt.reached = "", true
	}
}

// Reached reports whether any try reached the service: a request that
// never connected cannot have changed anything there.
func (lt *lastTry) Reached() bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.reached
}

// explain adds the latest try's failure to err when the operation's
// context ended it, and returns err unchanged otherwise.
func (lt *lastTry) explain(err error) error {
	if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		return err
	}
	lt.mu.Lock()
	failure := lt.failure
	lt.mu.Unlock()
	if failure == "" {
		return err
	}
	return fmt.Errorf("%w (the last try failed: %s)", err, failure)
}

// tryFailure describes a failed try in one line. A URL in it loses its
// query and user info, where a SAS signature or a password would be.
func tryFailure(err error) string {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		where := ue.URL
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery, u.User, u.Fragment = "", nil, ""
			where = u.String()
		}
		return fmt.Sprintf("%s %s: %v", ue.Op, where, ue.Err)
	}
	return err.Error()
}

// dialFailure reports whether err is a failure to connect, after which
// no byte of the request was sent.
func dialFailure(err error) bool {
	oe, ok := errors.AsType[*net.OpError](err)
	return ok && oe.Op == "dial"
}

// pipelineOptions sets co's retries (retryOptions, with codes) and adds
// lastTryPolicy to every try.
func pipelineOptions(co azcore.ClientOptions, codes ...int) azcore.ClientOptions {
	co.Retry = retryOptions(co.Retry, codes...)
	co.PerRetryPolicies = append(append([]policy.Policy(nil), co.PerRetryPolicies...), lastTryPolicy{})
	return co
}
