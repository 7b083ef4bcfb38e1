// Package fakehost plays the Azure Functions host toward a custom handler,
// for tests and for cmkrotator local. It reads the app as the host does
// (host.json and each function's function.json, see App), starts the
// handler as host.json describes it, sends byte for byte what the host
// sends (compact JSON envelopes with PascalCase keys, the X-Azure-Functions
// headers, a chunked body, Metadata with sys, dates re-formatted the way
// Newtonsoft does), and judges the answers the way the host does: a
// non-2xx status, a content type other than JSON, a body that is not an
// invocation result, or an Outputs.res that is not an object fails the
// invocation; an empty or null body never completes it.
//
// Clients reach HTTP functions through Do (or the Host as an
// http.Handler) at /{routePrefix}/{route}: the host answers 404 itself for
// a route no function declares or a method its function does not take,
// and 401 for a missing or wrong function key. Functions with one
// httpTrigger and one http output are forwarded when host.json turns
// enableForwardingHttpRequest on: called at their public path with the
// caller's method, query, headers and body, their answer passed through
// unjudged. Every other HTTP function gets its request as Data.<trigger
// name> of a JSON envelope, and the client gets its http output.
package fakehost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultVersion is the host version the fake host announces.
const DefaultVersion = "4.1037.0.0"

// Options configure a Host. Zero values are the host's defaults.
type Options struct {
	// Version is sent in X-Azure-Functions-HostVersion and User-Agent.
	// Zero: DefaultVersion.
	Version string

	// FunctionKey is the key calls to functions of authLevel function or
	// admin must carry, as ?code= or x-functions-key; calls without it
	// get 401 from the host and never reach the handler. Zero: a random
	// key, see Host.FunctionKey.
	FunctionKey string

	// Executable stands in for host.json's defaultExecutablePath when the
	// handler was built outside the app root (a test's build): its file
	// name must be the one defaultExecutablePath names. Zero: the path is
	// resolved as the host resolves it, in the app root, else on PATH.
	Executable string

	// Timeout is functionTimeout: an invocation that takes longer fails.
	// Zero: 5 minutes.
	Timeout time.Duration

	// ReadyTimeout bounds the wait for the handler to answer GET /.
	// Zero: 30 seconds (initializationTimeout).
	ReadyTimeout time.Duration

	// Output, when set, receives the started process's stdout and stderr
	// as they are written, besides the copy kept for Output().
	Output io.Writer
}

// Host talks to one custom handler at 127.0.0.1:port on behalf of app.
type Host struct {
	app    *App
	base   string
	port   int
	opts   Options
	client *http.Client

	// inError are functions the host does not load, with why: a
	// schedule naming an app setting that is not set.
	inError map[string]string

	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // process exit, valid after done is closed
}

// New returns a Host for app's handler, already listening on base
// ("http://127.0.0.1:port").
func New(base string, app *App, opts Options) (*Host, error) {
	if app == nil {
		return nil, errors.New("new host: no app")
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("parse handler address %q: %w", base, err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return nil, fmt.Errorf("parse handler address %q: want http://127.0.0.1:port", base)
	}
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	if opts.FunctionKey == "" {
		opts.FunctionKey = newKey()
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	return &Host{
		app:     app,
		base:    strings.TrimSuffix(base, "/"),
		port:    port,
		opts:    opts,
		inError: map[string]string{},
		client: &http.Client{
			// The host's HttpClient timeout is functionTimeout + 1 min.
			Timeout: opts.Timeout + time.Minute,
			// Forwarding disables redirects (azure-functions-host#7860).
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}, nil
}

// Start loads the app in root and starts its handler as the host does:
// host.json's defaultExecutablePath with its arguments (%NAME% expanded
// from env, unset names removed) in its workingDirectory (the app root
// when empty); a free loopback port in FUNCTIONS_CUSTOMHANDLER_PORT and
// the other variables the host sets; env as the app settings, and nothing
// else of this process's environment. A timer whose schedule names an app
// setting env does not set is not loaded, as the host leaves such a
// function in error. Start returns once the handler answers GET /.
func Start(ctx context.Context, root string, env []string, opts Options) (*Host, error) {
	app, err := LoadApp(root)
	if err != nil {
		return nil, err
	}
	path, err := executable(app, opts.Executable)
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	h, err := New("http://127.0.0.1:"+strconv.Itoa(port), app, opts)
	if err != nil {
		return nil, err
	}
	settings := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			settings[k] = v
		}
	}
	h.resolveSchedules(settings)

	dir := app.Root
	if wd := app.Handler.WorkingDirectory; wd != "" {
		if !filepath.IsAbs(wd) {
			wd = filepath.Join(app.Root, wd)
		}
		dir = wd
	}
	workerID := newGUID()
	cmd := exec.Command(path, expandArgs(app.Handler.Arguments, settings)...)
	cmd.Dir = dir
	cmd.Env = append(append([]string(nil), env...),
		"FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port),
		"FUNCTIONS_HTTPWORKER_PORT="+strconv.Itoa(port),
		"FUNCTIONS_CUSTOMHANDLER_WORKER_ID="+workerID,
		"FUNCTIONS_HTTPWORKER_ID="+workerID,
		"FUNCTIONS_APP_ROOT_PATH="+app.Root,
	)
	h.out = &syncBuffer{tee: opts.Output}
	cmd.Stdout, cmd.Stderr = h.out, h.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start handler %s: %w", path, err)
	}
	h.cmd = cmd
	h.done = make(chan struct{})
	go func() {
		h.err = cmd.Wait()
		close(h.done)
	}()

	if err := h.WaitReady(ctx); err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("%w; output:\n%s", err, h.Output())
	}
	return h, nil
}

// executable resolves defaultExecutablePath as HttpWorkerDescription
// does: a relative path that exists under the app root is made absolute,
// anything else is looked up on PATH. stand, when set, is the file to run
// instead, which must carry the name defaultExecutablePath gives.
func executable(app *App, stand string) (string, error) {
	p := app.Handler.DefaultExecutablePath
	if stand != "" {
		if filepath.Base(stand) != filepath.Base(p) {
			return "", fmt.Errorf("executable %s stands in for defaultExecutablePath %q: want a file named %s",
				stand, p, filepath.Base(p))
		}
		return stand, nil
	}
	if !filepath.IsAbs(p) {
		if cand := filepath.Join(app.Root, p); fileExists(cand) {
			return cand, nil
		}
	}
	found, err := exec.LookPath(p)
	if err != nil {
		return "", fmt.Errorf("defaultExecutablePath %q: not in the app root %s nor on PATH: %w", p, app.Root, err)
	}
	return found, nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

var settingRef = regexp.MustCompile(`%([^%]+)%`)

// expandArgs expands %NAME% in each argument from the app settings;
// names that are not set are removed, and so is an argument left empty.
func expandArgs(args []string, settings map[string]string) []string {
	var out []string
	for _, a := range args {
		a = settingRef.ReplaceAllStringFunc(a, func(m string) string {
			return settings[strings.Trim(m, "%")]
		})
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// resolveSchedules leaves in error every timer whose schedule names an
// app setting that is not set.
func (h *Host) resolveSchedules(settings map[string]string) {
	for name, fn := range h.app.Functions {
		t := fn.Trigger()
		if !strings.EqualFold(t.Type, "timerTrigger") {
			continue
		}
		for _, m := range settingRef.FindAllStringSubmatch(t.Schedule, -1) {
			if settings[m[1]] == "" {
				h.inError[name] = fmt.Sprintf("the function %s is in error: unable to resolve the value %s of its schedule: app setting %s is not set",
					name, m[0], m[1])
			}
		}
	}
}

// FreePort returns a loopback port that was free a moment ago, found the
// way the host finds one: binding 127.0.0.1:0.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// App returns the app the host plays.
func (h *Host) App() *App { return h.app }

// FunctionKey returns the key function-level HTTP functions require.
func (h *Host) FunctionKey() string { return h.opts.FunctionKey }

// Port returns the handler's port.
func (h *Host) Port() int { return h.port }

// URL returns the handler's base address, http://127.0.0.1:port.
func (h *Host) URL() string { return h.base }

// Output returns what the started process wrote to stdout and stderr.
func (h *Host) Output() string {
	if h.out == nil {
		return ""
	}
	return h.out.String()
}

// Exited returns a channel closed when the started process exits.
func (h *Host) Exited() <-chan struct{} { return h.done }

// Close stops a started handler with SIGTERM, as the host does on
// shutdown, and waits for it to exit (killing it after 10 seconds). It
// returns the process's exit error, nil for a clean exit.
func (h *Host) Close() error {
	if h.cmd == nil {
		return nil
	}
	select {
	case <-h.done:
		return h.err
	default:
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
	return h.err
}

// WaitReady polls GET / every 25 ms, as the host does, until any HTTP
// answer arrives; only a connection error means "not yet".
func (h *Host) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, h.opts.ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/", nil)
		if err != nil {
			return err
		}
		resp, err := h.client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for handler at %s: %w", h.base, ctx.Err())
		case <-h.done:
			return fmt.Errorf("wait for handler at %s: process exited: %v", h.base, h.err)
		case <-tick.C:
		}
	}
}

// Result is an invocation as the host saw it.
type Result struct {
	InvocationID string
	Status       int    // the handler's HTTP status; 0 when none arrived
	ContentType  string // the handler's Content-Type
	Body         []byte // the handler's raw body

	// Succeeded is the host's verdict; Failure says why not, in the
	// host's words where it has them.
	Succeeded bool
	Failure   string
	// Hung is set when the answer was empty or null: the real host never
	// completes such an invocation and fails it at functionTimeout.
	Hung bool

	// The parsed answer, only for a successful invocation; Logs are
	// dropped on failure as the host drops them.
	Logs        []string
	Outputs     map[string]json.RawMessage
	ReturnValue json.RawMessage

	// Bound are the non-HTTP outputs, by binding name ("$return" for
	// ReturnValue), as the host hands them to their bindings
	// (GetBindingValue): a string that is valid base64 becomes its bytes,
	// a []byte, unless the binding says dataType binary; anything else
	// as encoding/json decodes it.
	Bound map[string]any

	// Res is the http output (Outputs.<name>, or ReturnValue for
	// $return) mapped as the host maps it for the client.
	Res *HTTPOutput
}

// HTTPOutput is an http output binding's value as the client would get it.
type HTTPOutput struct {
	Status  int
	Headers http.Header
	Body    []byte
}

// EventGridStatus is what the Event Grid extension answers Event Grid for
// this invocation: 202 when it succeeded, 500 (Event Grid redelivers)
// when it failed.
func (r *Result) EventGridStatus() int {
	if r.Succeeded {
		return http.StatusAccepted
	}
	return http.StatusInternalServerError
}

// EventOptions shape an Event Grid trigger invocation.
type EventOptions struct {
	// AsString sends Data.<binding> as a JSON-encoded string rather than
	// an object, as the host does for string-typed trigger values.
	AsString bool
	// Retry, when set, adds Metadata.RetryContext with this RetryCount.
	Retry *int
}

// EventGrid invokes function, which must have an eventGridTrigger, with
// one Event Grid or CloudEvents event, as the host does for each element
// of an Event Grid delivery: Data.<trigger name> is the event, Metadata
// is {"data": event.data, "sys": …}.
func (h *Host) EventGrid(ctx context.Context, function string, event []byte, o EventOptions) (*Result, error) {
	fn, err := h.app.function(function, "eventGridTrigger")
	if err != nil {
		return nil, err
	}
	ev, err := newtonsoft(event)
	if err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}

	value := ev
	if o.AsString {
		value, _ = json.Marshal(string(ev))
	}
	var meta []field
	if data, ok := member(ev, "data"); ok {
		meta = append(meta, field{"data", hostValue(data)})
	}
	if o.Retry != nil {
		meta = append(meta, field{"RetryContext", retryContext(*o.Retry)})
	}
	meta = append(meta, field{"sys", sys(function)})

	body := envelope([]field{{fn.Trigger().Name, value}}, meta)
	return h.Invoke(ctx, function, body)
}

// TimerOptions shape a timer trigger invocation.
type TimerOptions struct {
	IsPastDue bool
}

// Timer invokes function, which must have a timerTrigger, as the host
// does when its schedule fires: Data.<trigger name> is the timer info.
func (h *Host) Timer(ctx context.Context, function string, o TimerOptions) (*Result, error) {
	fn, err := h.app.function(function, "timerTrigger")
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	timer := fmt.Sprintf(`{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":%q,"Next":%q,"LastUpdated":%q},"IsPastDue":%t}`,
		dotnetTime(now.Add(-time.Hour)), dotnetTime(now.Add(time.Hour)), dotnetTime(now.Add(-time.Hour)), o.IsPastDue)
	body := envelope([]field{{fn.Trigger().Name, []byte(timer)}}, []field{{"sys", sys(function)}})
	return h.Invoke(ctx, function, body)
}

// Invoke POSTs body, an envelope, to /function with the host's headers
// and judges the answer. The function must be one of the app's, and
// loaded.
func (h *Host) Invoke(ctx context.Context, function string, body []byte) (*Result, error) {
	fn, err := h.app.function(function, "")
	if err != nil {
		return nil, err
	}
	if why, ok := h.inError[function]; ok {
		return nil, errors.New(why)
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.Timeout)
	defer cancel()

	id := newGUID()
	// Hide the length: the host's ObjectContent goes out chunked.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/"+function,
		struct{ io.Reader }{bytes.NewReader(body)})
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-HostVersion", h.opts.Version)
	req.Header.Set("X-Azure-Functions-InvocationId", id)
	req.Header.Set("User-Agent", "Azure-Functions-Host/"+h.opts.Version)

	resp, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return &Result{InvocationID: id, Failure: "timeout value of " + h.opts.Timeout.String() + " exceeded by function"}, nil
		}
		return nil, fmt.Errorf("invoke %s: %w", function, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("invoke %s: read answer: %w", function, err)
	}
	return judge(fn, id, resp, data), nil
}

// judge applies the host's reading of an answer
// (DefaultHttpWorkerService.ProcessDefaultInvocationRequest).
func judge(fn Function, id string, resp *http.Response, data []byte) *Result {
	r := &Result{
		InvocationID: id,
		Status:       resp.StatusCode,
		ContentType:  resp.Header.Get("Content-Type"),
		Body:         data,
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		r.Failure = fmt.Sprintf("Response status code does not indicate success: %d (%s).",
			resp.StatusCode, http.StatusText(resp.StatusCode))
		return r
	}
	mt, _, _ := mime.ParseMediaType(r.ContentType)
	if mt != "application/json" && mt != "text/json" {
		r.Failure = fmt.Sprintf("No MediaTypeFormatter is available to read an object of type "+
			"'HttpScriptInvocationResult' from content with media type '%s'.", mt)
		return r
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		r.Hung = true
		r.Failure = "invocation result is null: the host never completes the invocation"
		return r
	}

	var res map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &res); err != nil {
		r.Failure = "Invalid HttpResponseMessage: " + err.Error()
		return r
	}
	// Top-level names match case-insensitively (Newtonsoft).
	for k, v := range res {
		switch strings.ToLower(k) {
		case "outputs":
			if string(v) != "null" {
				if err := json.Unmarshal(v, &r.Outputs); err != nil {
					r.Failure = "Invalid HttpResponseMessage: Outputs: " + err.Error()
					return r
				}
			}
		case "logs":
			if string(v) != "null" {
				if err := json.Unmarshal(v, &r.Logs); err != nil {
					r.Failure = "Invalid HttpResponseMessage: Logs: " + err.Error()
					return r
				}
			}
		case "returnvalue":
			r.ReturnValue = v
		}
	}
	if err := r.bind(fn); err != nil {
		r.Failure = err.Error()
		r.Logs = nil
		return r
	}
	r.Succeeded = true
	return r
}

// bind hands the outputs to the function's bindings: the http output to
// Res, every other one to Bound. Outputs' keys must equal binding names
// exactly; a key that names no binding is ignored, as the host ignores it.
func (r *Result) bind(fn Function) error {
	r.Bound = map[string]any{}
	values := map[string]json.RawMessage{}
	for k, v := range r.Outputs {
		values[k] = v
	}
	if len(r.ReturnValue) > 0 && string(r.ReturnValue) != "null" {
		values["$return"] = r.ReturnValue
	}
	for name, raw := range values {
		b, ok := fn.Output(name)
		if !ok {
			continue
		}
		if strings.EqualFold(b.Type, "http") {
			out, err := httpOutput(raw, name == "$return")
			if err != nil {
				return err
			}
			r.Res = out
			continue
		}
		r.Bound[name] = bindingValue(raw, b)
	}
	return nil
}

// bindingValue is GetBindingValue: a string that is valid base64 is
// decoded to bytes unless the binding is dataType binary.
func bindingValue(raw json.RawMessage, b Binding) any {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if !strings.EqualFold(b.DataType, "binary") {
			if data, ok := dotnetBase64(s); ok {
				return data
			}
		}
		return s
	}
	var v any
	_ = json.Unmarshal(raw, &v)
	return v
}

// dotnetBase64 decodes s as Convert.FromBase64String does: standard
// alphabet with padding, white space ignored.
func dotnetBase64(s string) ([]byte, bool) {
	s = strings.Join(strings.Fields(s), "")
	data, err := base64.StdEncoding.DecodeString(s)
	return data, err == nil
}

// httpOutput maps an http output binding's value (HttpBinding and
// RawScriptResult): statusCode string or number, missing meaning 200;
// header values written with ToString(); a string body verbatim, anything
// else as indented JSON. A $return binding may also hold a plain string,
// the body, decoded from base64 when it is valid base64.
func httpOutput(raw json.RawMessage, isReturn bool) (*HTTPOutput, error) {
	out := &HTTPOutput{Status: http.StatusOK, Headers: http.Header{}}
	var str string
	if isReturn && json.Unmarshal(raw, &str) == nil {
		out.Body = []byte(str)
		if data, ok := dotnetBase64(str); ok {
			out.Body = data
		}
		out.Headers.Set("Content-Type", "text/plain; charset=utf-8")
		return out, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, errors.New("failed while trying to deserialize to httpOutputBindingResponse")
	}
	for k, v := range obj {
		switch strings.ToLower(k) {
		case "statuscode":
			var s string
			var n int
			switch {
			case json.Unmarshal(v, &n) == nil:
				out.Status = n
			case json.Unmarshal(v, &s) == nil && s != "":
				code, err := strconv.Atoi(s)
				if err != nil {
					return nil, fmt.Errorf("httpOutputBindingResponse: statusCode %q: %w", s, err)
				}
				out.Status = code
			}
		case "headers":
			var hs map[string]json.RawMessage
			if err := json.Unmarshal(v, &hs); err != nil {
				return nil, fmt.Errorf("httpOutputBindingResponse: headers: %w", err)
			}
			for name, hv := range hs {
				var s string
				if json.Unmarshal(hv, &s) != nil {
					s = string(hv)
				}
				out.Headers.Set(name, s)
			}
		case "body":
			var s string
			switch {
			case string(v) == "null":
			case json.Unmarshal(v, &s) == nil:
				out.Body = []byte(s)
			default:
				var buf bytes.Buffer
				_ = json.Indent(&buf, v, "", "  ")
				out.Body = buf.Bytes()
			}
		}
	}
	if out.Headers.Get("Content-Type") == "" && out.Body != nil {
		out.Headers.Set("Content-Type", "text/plain; charset=utf-8")
	}
	return out, nil
}

// field is one member of an ordered JSON object.
type field struct {
	name  string
	value []byte
}

func object(fs []field) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(f.name)
		b.Write(name)
		b.WriteByte(':')
		b.Write(f.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func envelope(data, meta []field) []byte {
	return object([]field{{"Data", object(data)}, {"Metadata", object(meta)}})
}

func sys(function string) []byte {
	return object([]field{
		{"MethodName", quote(function)},
		{"UtcNow", quote(dotnetTime(time.Now().UTC()))},
		{"RandGuid", quote(newGUID())},
	})
}

func retryContext(n int) []byte {
	return []byte(fmt.Sprintf(`{"RetryCount":%d,"MaxRetryCount":%d,"Exception":null}`, n, n+1))
}

func quote(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// hostValue encodes a binding value by the rule of
// GetHttpScriptInvocationContextValue: objects stay objects, anything else
// becomes a JSON string holding its JSON.
func hostValue(v []byte) []byte {
	if len(v) > 0 && v[0] == '{' {
		return v
	}
	return quote(string(v))
}

// member returns the raw value of a top-level member of a JSON object.
func member(obj []byte, name string) ([]byte, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return nil, false
	}
	v, ok := m[name]
	return v, ok
}

// newtonsoft re-serializes JSON as the host does after parsing it with
// Newtonsoft defaults: compact, member order kept, and strings that look
// like ISO 8601 times parsed as DateTime and written back as
// yyyy-MM-ddTHH:mm:ss.FFFFFFFK (trailing fraction zeros dropped, offsets
// turned into the host's zone, UTC).
func newtonsoft(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var b bytes.Buffer
	if err := rewrite(dec, &b); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return b.Bytes(), nil
}

func rewrite(dec *json.Decoder, b *bytes.Buffer) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		b.WriteRune(rune(t))
		end := json.Delim('}')
		if t == '[' {
			end = ']'
		}
		for i := 0; dec.More(); i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			if t == '{' {
				key, err := dec.Token()
				if err != nil {
					return err
				}
				b.Write(quote(key.(string)))
				b.WriteByte(':')
			}
			if err := rewrite(dec, b); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
		b.WriteRune(rune(end))
	case string:
		if ts, err := time.Parse(time.RFC3339Nano, t); err == nil && strings.Contains(t, "T") {
			b.Write(quote(dotnetTime(ts.UTC())))
		} else {
			b.Write(quote(t))
		}
	case json.Number:
		b.WriteString(t.String())
	case bool:
		b.WriteString(strconv.FormatBool(t))
	case nil:
		b.WriteString("null")
	}
	return nil
}

// dotnetTime formats t (UTC) as .NET's round-trip-ish
// "yyyy-MM-ddTHH:mm:ss.FFFFFFFK": up to seven fraction digits, trailing
// zeros and a bare dot dropped, "Z" for UTC.
func dotnetTime(t time.Time) string {
	s := t.UTC().Format("2006-01-02T15:04:05.0000000")
	s = strings.TrimRight(s, "0")
	s = strings.TrimSuffix(s, ".")
	return s + "Z"
}

// newKey returns a function key: 32 random bytes, URL-safe base64, as
// the host's generated keys look.
func newKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// syncBuffer keeps a process's output for inspection and optionally tees
// it, line by line, to another writer.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	tee io.Writer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	if s.tee != nil {
		_, _ = s.tee.Write(p)
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Lines returns the started process's output split into lines.
func (h *Host) Lines() []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(h.Output()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}
