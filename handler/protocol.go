package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// InvokeRequest is the body the Functions host POSTs to /{FunctionName}
// for every function that is not forwarded (triggers other than HTTP):
// compact JSON with PascalCase top-level keys, binding values in Data and
// the trigger's binding data in Metadata. Values are kept raw because the
// host encodes them by type: objects as objects, strings, numbers and
// booleans as JSON-encoded strings.
type InvokeRequest struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// RetryContext is Metadata.RetryContext, present when host.json or
// function.json configures a retry policy.
type RetryContext struct {
	RetryCount    int `json:"RetryCount"`
	MaxRetryCount int `json:"MaxRetryCount"`
}

// InvokeResponse is what the handler answers to an InvokeRequest. The host
// reads it only from a 2xx answer with an application/json content type;
// Outputs and Logs are never null on the wire.
type InvokeResponse struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// errBinding marks an envelope that lacks a binding or carries one the
// handler cannot read.
var errBinding = errors.New("bad binding")

// decodeInvokeRequest reads the host's envelope. Unknown top-level keys
// are tolerated: the envelope is the host's, not ours.
func decodeInvokeRequest(data []byte) (InvokeRequest, error) {
	if err := checkDepth(data, maxDepth); err != nil {
		return InvokeRequest{}, fmt.Errorf("decode invocation: %w", err)
	}
	var req InvokeRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return InvokeRequest{}, fmt.Errorf("decode invocation: %w", err)
	}
	if req.Data == nil {
		return InvokeRequest{}, fmt.Errorf("decode invocation: %w: no Data", errBinding)
	}
	return req, nil
}

// Binding returns binding name's value as JSON. The host sends objects as
// objects and everything else as a JSON-encoded string (so an event may
// arrive as "{\"id\":…}"); a string value is unwrapped, twice at most,
// until it holds an object or an array.
func (r InvokeRequest) Binding(name string) ([]byte, error) {
	raw, ok := r.Data[name]
	if !ok || isNull(raw) {
		return nil, fmt.Errorf("binding %q: %w: missing", name, errBinding)
	}
	v := bytes.TrimSpace(raw)
	for range 2 {
		if len(v) == 0 || v[0] != '"' {
			break
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("binding %q: %w: %w", name, errBinding, err)
		}
		v = bytes.TrimSpace([]byte(s))
	}
	if len(v) == 0 || v[0] != '{' && v[0] != '[' || !json.Valid(v) {
		return nil, fmt.Errorf("binding %q: %w: want a JSON object or array", name, errBinding)
	}
	return v, nil
}

// Retry returns Metadata.RetryContext and whether it was present.
func (r InvokeRequest) Retry() (RetryContext, bool) {
	var rc RetryContext
	raw, ok := r.Metadata["RetryContext"]
	if !ok || isNull(raw) {
		return rc, false
	}
	return rc, json.Unmarshal(raw, &rc) == nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// writeInvoke answers the host. status is 200 when the invocation
// succeeded and 500 when it must count as failed (for Event Grid: answered
// 500, so Event Grid redelivers). The body is a full InvokeResponse either
// way; the host discards it on a failure, but people reading traffic do
// not.
func writeInvoke(w http.ResponseWriter, status int, logs []string, ret any) {
	if logs == nil {
		logs = []string{}
	}
	writeJSON(w, status, "application/json", InvokeResponse{
		Outputs:     map[string]any{},
		Logs:        logs,
		ReturnValue: ret,
	})
}

// writeJSON writes v as compact JSON with the given content type.
func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own types are written; a failure here is a bug.
		status = http.StatusInternalServerError
		contentType = "application/json"
		body = []byte(`{"Outputs":{},"Logs":["encode response failed"],"ReturnValue":null}`)
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", fmt.Sprint(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
