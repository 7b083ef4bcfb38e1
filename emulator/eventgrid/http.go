package eventgrid

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Operation names what a request asked for.
type Operation string

// The operations the server answers.
const (
	OpPublish       Operation = "publish"       // namespace topic, one event or a batch
	OpReceive       Operation = "receive"       // namespace subscription
	OpAcknowledge   Operation = "acknowledge"   // namespace subscription
	OpRelease       Operation = "release"       // namespace subscription
	OpReject        Operation = "reject"        // namespace subscription
	OpRenewLock     Operation = "renewLock"     // namespace subscription
	OpPublishEvents Operation = "publishEvents" // custom topic
)

// How a request authenticated, in Request.Auth.
const (
	AuthKey    = "key"    // shared access key
	AuthBearer = "bearer" // a bearer token the validator accepted
)

// maxBody is Event Grid's limit on one publish request.
const maxBody = 1 << 20

// API versions the SDK clients send: aznamespaces v1.0.0 sends
// 2024-06-01 and azeventgrid v1.0.0 sends 2018-01-01.
var (
	namespaceAPIVersions = map[string]bool{
		"2023-06-01-preview": true, "2023-10-01-preview": true,
		"2023-11-01": true, "2024-06-01": true,
	}
	topicAPIVersions = map[string]bool{"2018-01-01": true}
)

// Request is one recorded request. Credentials are never recorded.
type Request struct {
	Time         time.Time
	Operation    Operation // zero when no route matched
	Topic        string    // namespace topic or custom topic name
	Subscription string    // namespace subscription, for its operations
	Method       string
	Path         string
	Query        string
	ContentType  string
	Auth         string // AuthKey, AuthBearer, or zero when refused or absent
	Body         []byte
	Status       int
}

// Fault makes matching requests fail. A request that fails
// authentication or routing never reaches a fault.
type Fault struct {
	Operation  Operation     // zero: any
	Topic      string        // zero: any
	Status     int           // HTTP status to answer, e.g. 429 or 503
	Code       string        // error code in the body; zero: from Status
	RetryAfter time.Duration // sent as Retry-After (and retry-after-ms); zero: none
	Times      int           // how many requests fail; zero: all
}

type fault struct {
	Fault
	left int
}

// InjectFault adds f; the returned func removes it.
func (s *Server) InjectFault(f Fault) (remove func()) {
	ff := &fault{Fault: f, left: f.Times}
	s.mu.Lock()
	s.faults = append(s.faults, ff)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, g := range s.faults {
			if g == ff {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
				return
			}
		}
	}
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults = nil
	s.mu.Unlock()
}

// Requests returns a copy of the recorded requests, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	s.requests = nil
	s.mu.Unlock()
}

// route is what a request path names.
type route struct {
	op    Operation
	topic string
	sub   string
}

// parseRoute understands
//
//	/topics/{topic}:publish
//	/topics/{topic}/eventsubscriptions/{sub}:{action}
//	/customtopics/{topic}/api/events
func parseRoute(path string) (route, bool) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch {
	case len(parts) == 2 && parts[0] == "topics":
		topic, action, ok := strings.Cut(parts[1], ":")
		if !ok || action != "publish" || topic == "" {
			return route{}, false
		}
		return route{op: OpPublish, topic: topic}, true

	case len(parts) == 4 && parts[0] == "topics" && parts[2] == "eventsubscriptions":
		sub, action, ok := strings.Cut(parts[3], ":")
		if !ok || parts[1] == "" || sub == "" {
			return route{}, false
		}
		op := Operation(action)
		switch op {
		case OpReceive, OpAcknowledge, OpRelease, OpReject, OpRenewLock:
			return route{op: op, topic: parts[1], sub: sub}, true
		}
		return route{}, false

	case len(parts) == 4 && parts[0] == "customtopics" && parts[2] == "api" &&
		parts[3] == "events" && parts[1] != "":
		return route{op: OpPublishEvents, topic: parts[1]}, true
	}
	return route{}, false
}

func (s *Server) routes() http.Handler {
	return http.HandlerFunc(s.serve)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rt, ok := parseRoute(r.URL.Path)
	rec := Request{
		Time:         time.Now(),
		Operation:    rt.op,
		Topic:        rt.topic,
		Subscription: rt.sub,
		Method:       r.Method,
		Path:         r.URL.Path,
		Query:        r.URL.RawQuery,
		ContentType:  r.Header.Get("Content-Type"),
	}
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		rec.Status = sw.status
		s.mu.Lock()
		s.requests = append(s.requests, rec)
		s.mu.Unlock()
		s.opts.Logger.Debug("event grid request", "operation", rec.Operation,
			"topic", rec.Topic, "subscription", rec.Subscription, "status", rec.Status)
	}()

	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(sw, http.StatusBadRequest, "BadRequest", "reading the request body failed")
		return
	}
	rec.Body = body

	switch {
	case !ok:
		writeError(sw, http.StatusNotFound, "NotFound", "no resource at "+r.URL.Path)
		return
	case r.Method != http.MethodPost:
		writeError(sw, http.StatusMethodNotAllowed, "MethodNotAllowed",
			"method "+r.Method+" is not allowed")
		return
	}

	if !s.checkAPIVersion(sw, r, rt.op) {
		return
	}
	auth, ok := s.authenticate(sw, r, rt.op)
	if !ok {
		return
	}
	rec.Auth = auth
	if len(body) > maxBody {
		writeError(sw, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			"the request is larger than 1 MB")
		return
	}
	if s.applyFault(sw, rt) {
		return
	}

	switch rt.op {
	case OpPublishEvents:
		s.publishEvents(sw, r, rt.topic, body)
	case OpPublish:
		s.publishNamespace(sw, r, rt.topic, body)
	case OpReceive:
		s.receive(sw, r, rt)
	default:
		s.settle(sw, r, rt, body)
	}
}

func (s *Server) checkAPIVersion(w http.ResponseWriter, r *http.Request, op Operation) bool {
	v := r.URL.Query().Get("api-version")
	known := namespaceAPIVersions
	if op == OpPublishEvents {
		known = topicAPIVersions
	}
	switch {
	case v == "":
		writeError(w, http.StatusBadRequest, "BadRequest",
			"the api-version query parameter is required")
		return false
	case !known[v]:
		writeError(w, http.StatusBadRequest, "BadRequest",
			fmt.Sprintf("the api-version %q is not supported", v))
		return false
	}
	return true
}

// authenticate accepts the shared key in the header the operation's
// client sends it in, or a bearer token the validator accepts.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, op Operation) (string, bool) {
	authz := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(authz, "Bearer "); ok {
		if s.opts.ValidateToken == nil {
			writeError(w, http.StatusUnauthorized, "Unauthorized",
				"bearer tokens are not accepted by this emulator")
			return "", false
		}
		if err := s.opts.ValidateToken(tok, Audience); err != nil {
			writeError(w, http.StatusUnauthorized, "Unauthorized",
				"the bearer token is not valid: "+err.Error())
			return "", false
		}
		return AuthBearer, true
	}

	var key string
	if op == OpPublishEvents {
		key = r.Header.Get("aeg-sas-key")
	} else {
		key, _ = strings.CutPrefix(authz, "SharedAccessKey ")
	}
	if key != "" && subtle.ConstantTimeCompare([]byte(key), []byte(s.opts.Key)) == 1 {
		return AuthKey, true
	}
	writeError(w, http.StatusUnauthorized, "Unauthorized",
		"the request carries no valid shared access key or bearer token")
	return "", false
}

func (s *Server) applyFault(w http.ResponseWriter, rt route) bool {
	s.mu.Lock()
	var hit *fault
	for i, f := range s.faults {
		if (f.Operation == "" || f.Operation == rt.op) && (f.Topic == "" || f.Topic == rt.topic) {
			hit = f
			if f.Times > 0 {
				if f.left--; f.left == 0 {
					s.faults = append(s.faults[:i], s.faults[i+1:]...)
				}
			}
			break
		}
	}
	s.mu.Unlock()
	if hit == nil {
		return false
	}

	if d := hit.RetryAfter; d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
		w.Header().Set("retry-after-ms", strconv.FormatInt(d.Milliseconds(), 10))
	}
	code := hit.Code
	if code == "" {
		code = strings.ReplaceAll(http.StatusText(hit.Status), " ", "")
	}
	writeError(w, hit.Status, code, "injected fault")
	return true
}

// writeError answers in Event Grid's error shape, which azcore reads
// into ResponseError.ErrorCode.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	type detail struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	writeJSON(w, status, struct {
		Error detail `json:"error"`
	}{detail{code, msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		status, buf = http.StatusInternalServerError, *bytes.NewBufferString(`{}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// errBadEvent marks an event that fails validation; its message is
// the one returned to the client.
var errBadEvent = errors.New("bad event")
