// Package handler is the Azure Functions custom handler: it speaks the
// Functions host's protocol and the product's HTTP API, and maps rotation
// outcomes to answers in one place (outcome.go).
//
// Routes, as the host calls them:
//
//	GET  /                       readiness probe; always 200
//	POST /KeyNewVersionCreated   eventGridTrigger "event", JSON envelope
//	POST /Reconcile              timerTrigger "timer", JSON envelope
//	POST /api/rotate             forwarded HTTP (enableForwardingHttpRequest)
//	POST /api/replay             forwarded HTTP
//	GET  /api/status             forwarded HTTP
//	POST /Rotate, /Replay, /Status   the same three in JSON mode, for a
//	                             host with forwarding off; the answer goes
//	                             in Outputs.res
//
// Trigger invocations (KeyNewVersionCreated, Reconcile) answer 200 when
// the outcome is final and 500 only when a redelivery could succeed
// without a person. An envelope or event that cannot be decoded is final:
// it is logged as an error and answered 200, since a redelivery carries
// the same bytes.
//
// The API answers in two shapes:
//
//   - A request it refuses before any rotation (malformed or oversized
//     body, unknown field, a body declared as other than JSON, key URL
//     not in the subscription map, wrong method or route) gets RFC 9457
//     problem details, application/problem+json, with 400, 404, 405 (and
//     Allow), 413 or 415. A function's route called with another method
//     than POST gets the same 405.
//   - A request it acts on gets the result as JSON: a rotation.Report for
//     /api/rotate, a ReplayResponse for /api/replay. Its status says how
//     the rotation ended (200 all fine, 207 some servers failed for good,
//     404 key or version missing, 422 target version invalid, 502 the
//     vault answered unexpectedly, 503 retryable with Retry-After), and
//     when the key itself failed the report's error, errorKind and
//     retryable members say why. These are not problem details: the
//     report is the answer.
package handler
