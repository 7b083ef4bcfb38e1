package handler

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// keyNewVersionCreated handles the Event Grid trigger. The event arrives
// in Data.event, in either schema, as an object or a JSON-encoded string
// (an array too, should the binding ever say cardinality many).
func (s *server) keyNewVersionCreated(w http.ResponseWriter, r *http.Request) {
	ctx, inv := invocationOf(r)
	req, ok := s.envelope(w, r, inv)
	if !ok {
		return
	}
	attrs := []any{"function", "KeyNewVersionCreated"}
	if rc, ok := req.Retry(); ok {
		attrs = append(attrs, "attempt", rc.RetryCount+1)
	}

	raw, err := req.Binding("event")
	if err != nil {
		s.log.ErrorContext(ctx, "invocation refused", append(attrs, "err", err)...)
		writeInvoke(w, http.StatusBadRequest, inv.Logs(), nil)
		return
	}
	events, err := rotation.DecodeEvents(raw)
	if err != nil {
		// A redelivery carries the same bytes: drop the event, loudly.
		s.log.ErrorContext(ctx, "event dropped: cannot decode it", append(attrs, "err", err)...)
		writeInvoke(w, http.StatusOK, inv.Logs(), nil)
		return
	}
	for _, e := range events {
		s.log.InfoContext(ctx, "event received", "event_id", e.ID, "event_type", e.Type,
			"schema", e.Schema, "key_name", e.Key.Name, "key_version", e.Key.Version, "vault", e.Key.Vault)
	}

	results := s.cfg.Rotator.HandleEvents(ctx, events)
	status := invocationStatus(eventReports(results))
	if status != http.StatusOK {
		s.log.WarnContext(ctx, "invocation failed so that Event Grid redelivers", attrs...)
	}
	writeInvoke(w, status, inv.Logs(), nil)
}

// reconcile handles the timer trigger: every subscribed key to its
// current version.
func (s *server) reconcile(w http.ResponseWriter, r *http.Request) {
	ctx, inv := invocationOf(r)
	if _, ok := s.envelope(w, r, inv); !ok {
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

// envelope reads and decodes the host's envelope, answering the host
// itself when that fails.
func (s *server) envelope(w http.ResponseWriter, r *http.Request, inv *invocation) (InvokeRequest, bool) {
	data, err := readBody(w, r, maxEnvelope)
	if err == nil {
		var req InvokeRequest
		if req, err = decodeInvokeRequest(data); err == nil {
			return req, true
		}
	}
	s.log.ErrorContext(r.Context(), "invocation refused", "path", r.URL.Path, "err", err)
	status := http.StatusBadRequest
	if errors.Is(err, errTooLarge) {
		status = http.StatusRequestEntityTooLarge
	}
	writeInvoke(w, status, append(inv.Logs(), fmt.Sprint("invocation refused: ", err)), nil)
	return InvokeRequest{}, false
}
