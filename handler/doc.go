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
// Envelope invocations answer 200 when the outcome is final and 500 only
// when a redelivery could succeed without a person. The API answers
// report JSON, or RFC 9457 problem details for requests it refuses.
package handler
