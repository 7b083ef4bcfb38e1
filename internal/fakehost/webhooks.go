package fakehost

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// The host's own endpoints, besides the HTTP functions' routes: the
// Event Grid extension's webhook, which Event Grid calls, and the admin
// endpoint that runs a non-HTTP function by hand. Both take the key the
// fake host is configured with (the real host wants the eventgrid_extension
// system key and the master key).

const (
	eventGridWebhook = "/runtime/webhooks/eventgrid"
	adminFunctions   = "/admin/functions/"
)

// webhook answers a request to one of the host's own endpoints, or
// reports false when in is for neither.
func (h *Host) webhook(ctx context.Context, in *http.Request) (*http.Response, bool, error) {
	switch {
	case in.URL.Path == eventGridWebhook:
		resp, err := h.eventGridDelivery(ctx, in)
		return resp, true, err
	case strings.HasPrefix(in.URL.Path, adminFunctions):
		resp, err := h.adminInvoke(ctx, in)
		return resp, true, err
	}
	return nil, false, nil
}

// eventGridDelivery is what the Event Grid extension does with a
// delivery to /runtime/webhooks/eventgrid?functionName=F: a subscription
// validation is answered with its code; a notification (an array of Event
// Grid events, or one CloudEvent or an array of them) invokes F once per
// event, and the answer is 202 when every invocation succeeded and 500,
// so that Event Grid delivers the batch again, when one failed.
func (h *Host) eventGridDelivery(ctx context.Context, in *http.Request) (*http.Response, error) {
	if in.Method != http.MethodPost {
		return answer(in, http.StatusMethodNotAllowed, nil, nil), nil
	}
	if !hasKey(in, h.opts.FunctionKey) {
		return answer(in, http.StatusUnauthorized, nil, nil), nil
	}
	name := in.URL.Query().Get("functionName")
	if _, err := h.app.function(name, "eventGridTrigger"); err != nil {
		return answer(in, http.StatusNotFound, nil, []byte(err.Error())), nil
	}
	body, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	events, err := splitEvents(body)
	if err != nil {
		return answer(in, http.StatusBadRequest, nil, []byte(err.Error())), nil
	}

	switch kind := in.Header.Get("aeg-event-type"); {
	case strings.EqualFold(kind, "SubscriptionValidation"):
		return validation(in, events)
	case strings.EqualFold(kind, "SubscriptionDeletion"):
		return answer(in, http.StatusAccepted, nil, nil), nil
	case !strings.EqualFold(kind, "Notification"):
		return answer(in, http.StatusBadRequest, nil, []byte("aeg-event-type: want Notification, SubscriptionValidation or SubscriptionDeletion")), nil
	}
	status := http.StatusAccepted
	for _, ev := range events {
		res, err := h.EventGrid(ctx, name, ev, EventOptions{})
		if err != nil {
			return nil, err
		}
		if !res.Succeeded {
			status = http.StatusInternalServerError
		}
	}
	return answer(in, status, nil, nil), nil
}

// splitEvents returns the events of a delivery: the elements of an array,
// or the one object.
func splitEvents(body []byte) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '{' {
		return []json.RawMessage{body}, nil
	}
	var events []json.RawMessage
	if err := json.Unmarshal(body, &events); err != nil {
		return nil, err
	}
	return events, nil
}

// validation answers Event Grid's subscription validation handshake with
// the code of its first event.
func validation(in *http.Request, events []json.RawMessage) (*http.Response, error) {
	var ev struct {
		Data struct {
			ValidationCode string `json:"validationCode"`
		} `json:"data"`
	}
	if len(events) == 0 || json.Unmarshal(events[0], &ev) != nil || ev.Data.ValidationCode == "" {
		return answer(in, http.StatusBadRequest, nil, []byte("no validationCode")), nil
	}
	b, _ := json.Marshal(map[string]string{"validationResponse": ev.Data.ValidationCode})
	return answer(in, http.StatusOK, http.Header{"Content-Type": {"application/json"}}, b), nil
}

// adminInvoke runs a timer or Event Grid function by hand, as POST
// /admin/functions/{name} with {"input":"…"} does: a timer fires as if
// its schedule had; an Event Grid function gets input as its event. The
// real host answers 202 at once and runs the function later; the fake
// runs it first, then answers 202 whatever its outcome, as the real one
// does.
func (h *Host) adminInvoke(ctx context.Context, in *http.Request) (*http.Response, error) {
	if in.Method != http.MethodPost {
		return answer(in, http.StatusMethodNotAllowed, nil, nil), nil
	}
	if !hasKey(in, h.opts.FunctionKey) {
		return answer(in, http.StatusUnauthorized, nil, nil), nil
	}
	name := strings.TrimPrefix(in.URL.Path, adminFunctions)
	fn, err := h.app.function(name, "")
	if err != nil {
		return answer(in, http.StatusNotFound, nil, nil), nil
	}
	var body struct {
		Input *string `json:"input"`
	}
	if err := json.NewDecoder(in.Body).Decode(&body); err != nil || body.Input == nil {
		return answer(in, http.StatusBadRequest, nil, []byte(`want {"input":"…"}`)), nil
	}

	switch t := fn.Trigger().Type; {
	case strings.EqualFold(t, "timerTrigger"):
		_, err = h.Timer(ctx, name, TimerOptions{})
	case strings.EqualFold(t, "eventGridTrigger"):
		_, err = h.EventGrid(ctx, name, []byte(*body.Input), EventOptions{})
	default:
		return answer(in, http.StatusBadRequest, nil, []byte("the admin endpoint runs non-HTTP functions")), nil
	}
	if err != nil {
		return nil, err
	}
	return answer(in, http.StatusAccepted, nil, nil), nil
}
