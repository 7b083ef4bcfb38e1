package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// classify wraps err from operation op with the rotation sentinel that
// says whether a retry could succeed.
func classify(op string, err error) error {
	if re, ok := errors.AsType[*azcore.ResponseError](err); ok {
		err = responseError{re}
		switch code := re.StatusCode; {
		case code == http.StatusNotFound:
			return fmt.Errorf("%s: %w: %w", op, rotation.ErrNotFound, err)
		case code == http.StatusForbidden && keyDisabled(re):
			return fmt.Errorf("%s: %w: %w", op, rotation.ErrDisabled, err)
		case code == http.StatusTooManyRequests && retryAfter(re.RawResponse) > 0:
			return fmt.Errorf("%s: %w", op, &rotation.RetryAfterError{After: retryAfter(re.RawResponse), Err: err})
		case code == http.StatusRequestTimeout, code == http.StatusConflict, code == http.StatusTooManyRequests,
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

// responseError keeps an *azcore.ResponseError in the chain but prints
// one line: the SDK's own text spans the whole response, too much for a
// per-server report.
type responseError struct{ re *azcore.ResponseError }

func (e responseError) Error() string {
	msg := strconv.Itoa(e.re.StatusCode)
	if e.re.ErrorCode != "" {
		msg += " " + e.re.ErrorCode
	}
	if r := e.re.RawResponse; r != nil && r.Request != nil {
		msg = r.Request.Method + " " + r.Request.URL.Path + ": " + msg
	}
	return msg
}

func (e responseError) Unwrap() error { return e.re }

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
	// Four retries at 0.5 s doubling (about 7.5 s in all) ride out a
	// throttling burst or an in-flight ARM update without using up the
	// default 25 s deadline.
	retryMax   = 4
	retryDelay = 500 * time.Millisecond
	// A Retry-After longer than 15 s is better answered by Event Grid's
	// own redelivery (10 s, 30 s, 1 min, …) than by holding the call.
	retryMaxDelay = 15 * time.Second
)

// retryOptions fills the zero fields of o with the settings above and, when
// o has no ShouldRetry, retries codes plus transport errors, but never a
// response whose Retry-After outlasts the request's deadline.
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
				return true
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
