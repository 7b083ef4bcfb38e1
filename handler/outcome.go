package handler

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// This file is the one place that turns rotation outcomes into HTTP
// statuses.

// invocationStatus is the answer to a trigger invocation (Event Grid or
// timer): 500, so that the host fails the invocation and Event Grid
// redelivers, only when some report says a redelivery could succeed
// without a person. Final failures (invalid key, server gone) answer 200:
// a redelivery would fail the same way for a day.
func invocationStatus(reports []rotation.Report) int {
	for _, rep := range reports {
		if !rep.Final() {
			return http.StatusInternalServerError
		}
	}
	return http.StatusOK
}

// apiStatus is the answer to /api/rotate and /api/replay:
//
//	200  every server rotated, current or skipped
//	503  everything that failed may succeed on a retry (with Retry-After)
//	502  the vault or Resource Manager answered an unexpected error for
//	     the key itself
//	422  the key cannot be rotated as asked (invalid target version)
//	404  the key or the requested version does not exist
//	207  some servers failed for good, or some failures need a person
//	     and others may clear on a retry
//
// A retry is offered (503) only when it could finish the work: a client
// told to retry a request that also holds a failure for a person would
// retry it for ever.
func apiStatus(reports []rotation.Report) int {
	status, retry := http.StatusOK, false
	for _, rep := range reports {
		switch {
		case rep.OK():
		case rep.Retryable:
			retry = true
		case rep.Error != "":
			status = max(status, keyErrorStatus(rep.ErrorKind))
		default:
			status = max(status, http.StatusMultiStatus)
		}
	}
	switch {
	case retry && status == http.StatusOK:
		return http.StatusServiceUnavailable
	case retry:
		return http.StatusMultiStatus
	}
	return status
}

// keyErrorStatus classifies a final key-level error.
func keyErrorStatus(kind rotation.ErrorKind) int {
	switch kind {
	case rotation.KindInvalidTarget:
		return http.StatusUnprocessableEntity
	case rotation.KindNotFound, rotation.KindNotSubscribed:
		return http.StatusNotFound
	default:
		return http.StatusBadGateway
	}
}

// defaultRetryAfter is sent with 503 when Azure named no wait: Event
// Grid's own first retries come after 10 s and 30 s, and a throttled
// Resource Manager usually recovers within half a minute.
const defaultRetryAfter = 30 * time.Second

// retryAfter is the Retry-After of a 503 in seconds: the longest wait
// Azure asked for in any report, or defaultRetryAfter.
func retryAfter(reports []rotation.Report) string {
	var wait time.Duration
	for _, rep := range reports {
		wait = max(wait, rep.RetryAfter)
	}
	if wait <= 0 {
		wait = defaultRetryAfter
	}
	return strconv.Itoa(int(math.Ceil(wait.Seconds())))
}
