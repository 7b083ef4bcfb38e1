package handler

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// keyNewVersionCreated handles the Event Grid trigger. The event arrives
// in Data.event, in either schema, as an object or a JSON-encoded string
// (an array too, should the binding ever say cardinality many).
//
// A redelivery carries the same bytes, so whatever cannot be decoded (the
// envelope, the binding, or single events of an array) is dropped with an
// error in the logs and does not fail the invocation; the events that did
// decode decide the answer.
func (s *server) keyNewVersionCreated(w http.ResponseWriter, r *http.Request) {
	ctx, inv := invocationOf(r)
	attrs := []any{"function", "KeyNewVersionCreated"}
	req, ok := s.envelope(w, r, s.dropTrigger(ctx, w, inv, "event dropped: undecodable invocation", attrs))
	if !ok {
		return
	}
	if rc, ok := req.Retry(); ok {
		attrs = append(attrs, "attempt", rc.RetryCount+1)
	}

	raw, err := req.Binding("event")
	var b rotation.Batch
	if err == nil {
		b, err = rotation.DecodeBatch(raw)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "event dropped: undecodable", append(attrs, "err", err)...)
		writeInvoke(w, http.StatusOK, inv.Logs(), nil)
		return
	}
	for _, e := range b.Bad {
		s.log.ErrorContext(ctx, "event dropped: undecodable",
			append(attrs, "index", e.Index, "event_id", e.ID, "err", e.Err)...)
	}
	if b.Size == 0 {
		s.log.ErrorContext(ctx, "event dropped: the binding holds no event", attrs...)
	}
	for _, e := range b.Events {
		s.log.InfoContext(ctx, "event received", "event_id", e.ID, "event_type", e.Type,
			"schema", e.Schema, "key_name", e.Key.Name, "key_version", e.Key.Version, "vault", e.Key.Vault)
	}
	if len(b.Events) == 0 {
		writeInvoke(w, http.StatusOK, inv.Logs(), nil)
		return
	}

	results := s.cfg.Rotator.HandleEvents(ctx, b.Events)
	status := invocationStatus(rotation.Reports(results))
	if status != http.StatusOK {
		s.log.WarnContext(ctx, "invocation failed so that Event Grid redelivers", attrs...)
	}
	writeInvoke(w, status, inv.Logs(), nil)
}

// reconcile handles the timer trigger: every subscribed key to its
// current version.
func (s *server) reconcile(w http.ResponseWriter, r *http.Request) {
	ctx, inv := invocationOf(r)
	attrs := []any{"function", "Reconcile"}
	drop := s.dropTrigger(ctx, w, inv, "timer tick dropped: undecodable invocation", attrs)
	if _, ok := s.envelope(w, r, drop); !ok {
		return
	}
	s.log.InfoContext(ctx, "reconcile started")
	reports := s.cfg.Rotator.Reconcile(ctx)
	rotated, failed := 0, 0
	for _, rep := range reports {
		for _, sr := range rep.Servers {
			switch sr.Outcome {
			case rotation.Rotated:
				rotated++
			case rotation.Failed:
				failed++
			}
		}
	}
	s.log.InfoContext(ctx, "reconcile done", "keys", len(reports), "rotated", rotated, "failed", failed)
	writeInvoke(w, invocationStatus(reports), inv.Logs(), nil)
}

// envelope reads and decodes the host's envelope of a trigger, up to
// maxEnvelope bytes. When that fails it has refuse answer the host and
// returns false.
func (s *server) envelope(w http.ResponseWriter, r *http.Request, refuse func(error)) (InvokeRequest, bool) {
	return s.envelopeWithin(w, r, maxEnvelope, refuse)
}

func (s *server) envelopeWithin(w http.ResponseWriter, r *http.Request, limit int64, refuse func(error)) (InvokeRequest, bool) {
	data, err := readBody(w, r, limit)
	if err == nil {
		var req InvokeRequest
		if req, err = decodeInvokeRequest(data); err == nil {
			return req, true
		}
	}
	refuse(err)
	return InvokeRequest{}, false
}

// refuseInvocation answers an envelope of an HTTP function that cannot
// be read (too large, undecodable, without Data.req) for the API route
// path. The invocation succeeds and its http output carries the refusal,
// 413 or 400 problem details: the host answers the client 500 for a
// failed invocation, and drops the reason.
func (s *server) refuseInvocation(w http.ResponseWriter, r *http.Request, inv *invocation, path string) func(error) {
	return func(err error) {
		s.log.ErrorContext(r.Context(), "invocation refused", "path", r.URL.Path, "err", err)
		rec := newRecorder()
		if errors.Is(err, errTooLarge) {
			w.Header().Set("Connection", "close")
			writeProblemAt(rec, path, http.StatusRequestEntityTooLarge, problemTooLarge, "Body too large",
				fmt.Sprintf("the host's invocation of %s is larger than %s takes: %v", r.URL.Path, path, err))
		} else {
			writeProblemAt(rec, path, http.StatusBadRequest, problemBadRequest, "Undecodable invocation",
				fmt.Sprintf("the host's invocation of %s cannot be read: %v", r.URL.Path, err))
		}
		writeOutput(w, rec, inv)
	}
}

// dropTrigger answers an undecodable envelope of a trigger invocation:
// it logs msg as an error and answers 200, for the host would turn any
// other answer into a failed invocation and Event Grid would redeliver
// the same bytes for a day. The body is still read only up to its
// limit, and the connection is closed after a body that goes past it.
func (s *server) dropTrigger(ctx context.Context, w http.ResponseWriter, inv *invocation,
	msg string, attrs []any) func(error) {
	return func(err error) {
		if errors.Is(err, errTooLarge) {
			w.Header().Set("Connection", "close")
		}
		s.log.ErrorContext(ctx, msg, append(attrs, "err", err)...)
		writeInvoke(w, http.StatusOK, inv.Logs(), nil)
	}
}
