package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// RotateRequest is the body of POST /api/rotate. Unknown fields are
// refused.
type RotateRequest struct {
	// Key is a key URL. Versionless: rotate to the key's current version.
	// Versioned: rotate to exactly that version.
	Key string `json:"key"`
	// DryRun decides and reports without writing anything.
	DryRun bool `json:"dryRun,omitempty"`
	// AllowOlder lets a server move to a version older than its own.
	AllowOlder bool `json:"allowOlder,omitempty"`
}

// ReplayResponse is the answer to POST /api/replay: one result per event,
// in the order given. An event that does not decode is not processed; its
// result says so in Ignored ("undecodable: …"), with its id when the
// envelope has one, and counts as final.
type ReplayResponse struct {
	Results []rotation.EventResult `json:"results"`
}

// StatusResponse is the answer to GET /api/status: rotation.Status plus
// the credential check.
type StatusResponse struct {
	Credential *CredentialStatus `json:"credential,omitempty"`
	rotation.Status
}

func (s *server) rotate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	data, ok := s.body(w, r, maxRequest)
	if !ok {
		return
	}
	var in RotateRequest
	if err := decodeStrict(data, &in, "key", "dryRun", "allowOlder"); err != nil {
		badBody(w, r, err)
		return
	}
	if in.Key == "" {
		writeProblem(w, r, http.StatusBadRequest, problemBadRequest, "Missing key",
			`the body must name a key: {"key":"https://{vault}/keys/{name}[/{version}]"}`)
		return
	}
	ref, err := rotation.ParseKeyURL(in.Key)
	if err != nil {
		writeProblem(w, r, http.StatusBadRequest, problemBadRequest, "Invalid key URL", err.Error())
		return
	}

	s.log.InfoContext(ctx, "rotation requested", "key_name", ref.Name, "key_version", ref.Version,
		"vault", ref.Vault, "dry_run", in.DryRun, "allow_older", in.AllowOlder)
	rep := s.cfg.Rotator.Rotate(ctx, rotation.Request{Key: ref, DryRun: in.DryRun, AllowOlder: in.AllowOlder, Manual: true})
	if rep.ErrorKind == rotation.KindNotSubscribed {
		writeProblem(w, r, http.StatusNotFound, problemUnknownKey, "Key not subscribed",
			fmt.Sprintf("%s is not in the subscription map (ROTATION_TARGETS); only mapped keys can be rotated", ref.Versionless()))
		return
	}
	writeAPI(w, []rotation.Report{rep}, rep)
}

func (s *server) replay(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	data, ok := s.body(w, r, maxReplay)
	if !ok {
		return
	}
	if err := checkDepth(data, maxDepth); err != nil {
		badBody(w, r, err)
		return
	}
	if !json.Valid(data) {
		badBody(w, r, malformed(data))
		return
	}
	b, err := rotation.DecodeBatch(data)
	if err != nil {
		badBody(w, r, &invalidError{msg: err.Error()}) // valid JSON, neither object nor array
		return
	}
	if b.Size == 0 {
		writeProblem(w, r, http.StatusBadRequest, problemBadRequest, "No events",
			"the body must be one event or a non-empty array of events")
		return
	}
	if len(b.Events) == 0 {
		errs := make([]error, len(b.Bad))
		for i, e := range b.Bad {
			errs[i] = fmt.Errorf("event %d: %w", e.Index, e.Err)
		}
		writeProblem(w, r, http.StatusBadRequest, problemBadRequest, "No decodable events",
			errors.Join(errs...).Error())
		return
	}

	for _, e := range b.Bad {
		s.log.ErrorContext(ctx, "event ignored: undecodable", "index", e.Index, "event_id", e.ID, "err", e.Err)
	}
	s.log.InfoContext(ctx, "replay requested", "events", len(b.Events), "undecodable", len(b.Bad))
	results := s.cfg.Rotator.HandleEvents(ctx, b.Events)
	writeAPI(w, rotation.Reports(results), ReplayResponse{Results: b.Results(results)})
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	resp := StatusResponse{Status: s.cfg.Rotator.Status(r.Context())}
	if s.cfg.Credential != nil {
		c := s.cfg.Credential(r.Context())
		resp.Credential = &c
	}
	writeJSON(w, http.StatusOK, "application/json", resp)
}

// body reads a bounded API body declared as JSON, answering 415 when it
// is declared as something else and 413 when it is too large.
func (s *server) body(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSON(ct) {
		writeProblem(w, r, http.StatusUnsupportedMediaType, problemMediaType, "Unsupported media type",
			fmt.Sprintf("%s takes application/json, not %s (with curl: -H 'Content-Type: application/json')",
				r.URL.Path, mediaType(ct)))
		return nil, false
	}

	data, err := readBody(w, r, limit)
	switch {
	case errors.Is(err, errTooLarge):
		writeProblem(w, r, http.StatusRequestEntityTooLarge, problemTooLarge, "Body too large",
			fmt.Sprintf("%s takes at most %d bytes", r.URL.Path, limit))
		return nil, false
	case err != nil:
		writeProblem(w, r, http.StatusBadRequest, problemBadRequest, "Unreadable body", err.Error())
		return nil, false
	}
	return data, true
}

// isJSON reports whether the Content-Type ct declares JSON:
// application/json or a +json type (RFC 6839), whatever its parameters.
// text/plain is not JSON: a body declared as text is refused, as Azure's
// own APIs refuse it, rather than read as something it does not claim to
// be. A request without a Content-Type is taken as JSON.
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// mediaType names the Content-Type ct for a problem detail: its media
// type without parameters, or ct itself, quoted and cut short, when it
// does not parse.
func mediaType(ct string) string {
	if mt, _, err := mime.ParseMediaType(ct); err == nil || errors.Is(err, mime.ErrInvalidMediaParameter) {
		return mt
	}
	return fmt.Sprintf("%.64q", ct)
}

// badBody refuses a body that decodeStrict or the replay decoder could
// not take: well-formed JSON of the wrong shape (*invalidError) is an
// invalid body, anything else malformed JSON.
func badBody(w http.ResponseWriter, r *http.Request, err error) {
	if _, ok := errors.AsType[*invalidError](err); ok {
		writeProblem(w, r, http.StatusBadRequest, problemInvalidBody, "Invalid request body", err.Error())
		return
	}
	writeProblem(w, r, http.StatusBadRequest, problemBadJSON, "Malformed JSON", err.Error())
}

// writeAPI writes v with the status reports call for, and Retry-After on
// 503.
func writeAPI(w http.ResponseWriter, reports []rotation.Report, v any) {
	status := apiStatus(reports)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter(reports))
	}
	writeJSON(w, status, "application/json", v)
}

// httpTriggerRequest is Data.req of an httpTrigger invocation in JSON mode.
type httpTriggerRequest struct {
	URL     string              `json:"Url"`
	Method  string              `json:"Method"`
	Headers map[string][]string `json:"Headers"`
	Body    *string             `json:"Body"`
}

// httpOutput is the http output binding value the host maps to the
// client's answer.
type httpOutput struct {
	StatusCode string            `json:"statusCode"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
}

// jsonMode serves the API route path, whose bodies are bounded by
// limit, for a host that does not forward HTTP: the client's request
// arrives as Data.req, and the answer, refusals included, goes back in
// Outputs.res of an invocation answered 200, since the host answers the
// client 500 for any other status.
func (s *server) jsonMode(path string, limit int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, inv := invocationOf(r)
		refuse := s.refuseInvocation(w, r, inv, path)
		env, ok := s.envelopeWithin(w, r, httpEnvelope(limit), refuse)
		if !ok {
			return
		}
		raw, err := env.Binding("req")
		var in httpTriggerRequest
		if err == nil {
			err = json.Unmarshal(raw, &in)
		}
		if err != nil {
			refuse(err)
			return
		}

		var body []byte
		if in.Body != nil {
			body = []byte(*in.Body)
		}
		req, err := http.NewRequestWithContext(ctx, in.Method, path, bytes.NewReader(body))
		if err != nil {
			refuse(err)
			return
		}
		for k, vs := range in.Headers {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		rec := newRecorder()
		s.api.ServeHTTP(rec, req)
		writeOutput(w, rec, inv)
	}
}

// writeOutput answers the host's invocation with rec, the API's answer,
// as the http output res, and the invocation's logs.
func writeOutput(w http.ResponseWriter, rec *recorder, inv *invocation) {
	out := httpOutput{StatusCode: strconv.Itoa(rec.status), Headers: map[string]string{}, Body: rec.body.String()}
	for k := range rec.header {
		if k != "Content-Length" { // the host frames the body itself
			out.Headers[k] = rec.header.Get(k)
		}
	}
	writeJSON(w, http.StatusOK, "application/json", InvokeResponse{
		Outputs: map[string]any{"res": out}, Logs: nonNil(inv.Logs()),
	})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// recorder is a minimal ResponseWriter that keeps the answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}
