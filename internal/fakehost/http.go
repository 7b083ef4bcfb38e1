package fakehost

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Do answers a client's request to the host's public HTTP endpoint, as
// the host does. Its own endpoints come first: the Event Grid webhook
// and the admin endpoint (see webhook). The host itself answers 404, with no body, when no HTTP
// function's route matches the path (/{routePrefix}/{route}) or the
// function does not take the method (azure-functions-host#10098), and
// 401 when a function of authLevel function or admin is called without
// the function key (?code= or x-functions-key). Otherwise a forwarded
// function's answer is the client's, as the handler gave it; any other
// function is invoked in JSON mode (see HTTP) and the client gets its
// http output, or 500 when the invocation failed.
func (h *Host) Do(ctx context.Context, in *http.Request) (*http.Response, error) {
	if resp, ok, err := h.webhook(ctx, in); ok {
		return resp, err
	}
	fn, params, ok := h.app.route(in.URL.Path)
	if !ok || !takes(fn.Trigger(), in.Method) {
		return answer(in, http.StatusNotFound, nil, nil), nil
	}
	if fn.Trigger().AuthLevel != "anonymous" && !hasKey(in, h.opts.FunctionKey) {
		return answer(in, http.StatusUnauthorized, nil, nil), nil
	}
	if h.app.Forwarding && fn.forwardable() {
		return h.forward(ctx, in)
	}

	res, err := h.invokeHTTP(ctx, fn, params, in)
	if err != nil {
		return nil, err
	}
	switch {
	case !res.Succeeded:
		return answer(in, http.StatusInternalServerError, nil, nil), nil
	case res.Res == nil:
		// No http output in the answer: the client gets 200 and {}.
		return answer(in, http.StatusOK, nil, []byte("{}")), nil
	}
	return answer(in, res.Res.Status, res.Res.Headers, res.Res.Body), nil
}

// ServeHTTP serves the host's public endpoint with Do.
func (h *Host) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp, err := h.Do(r.Context(), r)
	if err != nil {
		http.Error(w, "", http.StatusInternalServerError)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func takes(trigger Binding, method string) bool {
	return len(trigger.Methods) == 0 || slices.Contains(trigger.Methods, strings.ToLower(method))
}

func answer(in *http.Request, status int, header http.Header, body []byte) *http.Response {
	if header == nil {
		header = http.Header{}
	}
	return &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          io.NopCloser(strings.NewReader(string(body))),
		ContentLength: int64(len(body)),
		Request:       in,
	}
}

func hasKey(r *http.Request, key string) bool {
	return r.URL.Query().Get("code") == key || r.Header.Get("x-functions-key") == key
}

// forward sends a client's request to a forwarded function: same method,
// path (/api/…), query and headers (the function key included), the body
// only when the client sent a Content-Length, plus the host's headers.
// The answer is the client's answer: any status, unjudged.
func (h *Host) forward(ctx context.Context, in *http.Request) (*http.Response, error) {
	target := h.base + in.URL.EscapedPath()
	if q := rebuildQuery(in.URL.Query()); q != "" {
		target += "?" + q
	}
	var body io.Reader
	if in.ContentLength > 0 && in.Body != nil {
		body = in.Body
	}
	out, err := http.NewRequestWithContext(ctx, in.Method, target, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		out.ContentLength = in.ContentLength
	}
	for k, vs := range in.Header {
		out.Header[k] = append([]string(nil), vs...)
	}
	if in.Host != "" {
		out.Host = in.Host
	}
	ua := strings.TrimSpace(in.Header.Get("User-Agent") + " Azure-Functions-Host/" + h.opts.Version)
	out.Header.Set("User-Agent", ua)
	out.Header.Set("X-Azure-Functions-HostVersion", h.opts.Version)
	out.Header.Set("X-Azure-Functions-InvocationId", newGUID())
	return h.client.Do(out)
}

// rebuildQuery writes the parsed query back the way the host does:
// repeated keys collapse to k=a,b.
func rebuildQuery(q url.Values) string {
	keys := sortedKeys(q)
	var parts []string
	for _, k := range keys {
		parts = append(parts, url.QueryEscape(k)+"="+url.QueryEscape(strings.Join(q[k], ",")))
	}
	return strings.Join(parts, "&")
}

// HTTP invokes the HTTP function in's path routes to in JSON mode, as the
// host does when it does not forward: after routing and the key check,
// which HTTP leaves to Do. It fails when no function takes in's path and
// method.
func (h *Host) HTTP(ctx context.Context, in *http.Request) (*Result, error) {
	fn, params, ok := h.app.route(in.URL.Path)
	if !ok || !takes(fn.Trigger(), in.Method) {
		return nil, fmt.Errorf("%s %s: no function of the app takes it", in.Method, in.URL.Path)
	}
	return h.invokeHTTP(ctx, fn, params, in)
}

// invokeHTTP builds the envelope of an HTTP invocation
// (HttpRequestExtensions.GetRequestAsJObject): Data.<trigger> is {Url
// (scheme as received), Method, Query, Headers as arrays with Host and
// Content-Length among them, Params from the route, Identities, Body as a
// string, base64 for octet-stream and multipart bodies, present only when
// the client sent a Content-Length}; Metadata has the top-level members
// of a JSON object body, the query (code aside) and the route parameters,
// objects as objects and the rest as JSON strings holding a JSON string,
// then Query, Headers (values joined) and sys.
func (h *Host) invokeHTTP(ctx context.Context, fn Function, params map[string]string, in *http.Request) (*Result, error) {
	var body []byte
	if in.ContentLength > 0 && in.Body != nil {
		b, err := io.ReadAll(in.Body)
		if err != nil {
			return nil, fmt.Errorf("read client body: %w", err)
		}
		body = b
	}

	host := in.Host
	if host == "" {
		host = in.URL.Host
	}
	scheme := in.URL.Scheme
	if scheme == "" {
		scheme = "http"
		if in.TLS != nil {
			scheme = "https"
		}
	}

	q := in.URL.Query()
	query := []field{}
	for _, k := range sortedKeys(q) {
		query = append(query, field{k, quote(strings.Join(q[k], ","))})
	}
	hdr := in.Header.Clone()
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Host", host)
	if hdr.Get("Content-Length") == "" && in.ContentLength > 0 {
		hdr.Set("Content-Length", strconv.FormatInt(in.ContentLength, 10))
	}
	headers, metaHeaders := []field{}, []field{}
	for _, k := range sortedKeys(hdr) {
		arr, _ := json.Marshal(hdr[k])
		headers = append(headers, field{k, arr})
		metaHeaders = append(metaHeaders, field{k, quote(strings.Join(hdr[k], ","))})
	}
	routeParams := []field{}
	for _, k := range sortedKeys(params) {
		routeParams = append(routeParams, field{k, quote(params[k])})
	}

	req := []field{
		{"Url", quote(scheme + "://" + host + in.URL.RequestURI())},
		{"Method", quote(strings.ToUpper(in.Method))},
		{"Query", object(query)},
		{"Headers", object(headers)},
		{"Params", object(routeParams)},
		{"Identities", identities(fn.Trigger().AuthLevel)},
	}
	if body != nil {
		req = append(req, field{"Body", quote(bodyText(in.Header.Get("Content-Type"), body))})
	}

	var meta []field
	var props map[string]json.RawMessage
	if json.Unmarshal(body, &props) == nil {
		for _, k := range sortedKeys(props) {
			v := props[k]
			switch {
			case len(v) > 0 && v[0] == '[':
				continue // arrays are left out of binding data
			case len(v) > 0 && v[0] == '{':
				meta = append(meta, field{k, v})
			default:
				meta = append(meta, field{k, doubleQuote(text(v))})
			}
		}
	}
	for _, k := range sortedKeys(q) {
		if k != "code" {
			meta = append(meta, field{k, doubleQuote(q.Get(k))})
		}
	}
	for _, k := range sortedKeys(params) {
		meta = append(meta, field{k, doubleQuote(params[k])})
	}
	meta = append(meta, field{"Query", object(query)}, field{"Headers", object(metaHeaders)}, field{"sys", sys(fn.Name)})

	return h.Invoke(ctx, fn.Name, envelope([]field{{fn.Trigger().Name, object(req)}}, meta))
}

// bodyText is Data.req.Body: the body as text, or base64 for the types
// the host does not read as text.
func bodyText(contentType string, body []byte) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/octet-stream" || strings.HasPrefix(mt, "multipart/") {
		return base64.StdEncoding.EncodeToString(body)
	}
	return string(body)
}

// identities is Data.req.Identities: the claims identity the key check
// established (the shape Core Tools sends), none for anonymous functions.
func identities(authLevel string) []byte {
	if authLevel == "anonymous" {
		return []byte("[]")
	}
	level := "Function"
	if authLevel == "admin" {
		level = "Admin"
	}
	return []byte(`[{"AuthenticationType":"WebJobsAuthLevel","IsAuthenticated":true,"Actor":null,"BootstrapContext":null,"Label":null,"Name":null,"Claims":[{"Issuer":"LOCAL AUTHORITY","OriginalIssuer":"LOCAL AUTHORITY","Properties":{},"Type":"http://schemas.microsoft.com/2017/07/functions/claims/authlevel","Value":"` +
		level + `","ValueType":"http://www.w3.org/2001/XMLSchema#string"}],"NameClaimType":"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name","RoleClaimType":"http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}]`)
}

// text is a JSON value's text as binding data holds it: a string's
// contents, any other value's JSON.
func text(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// doubleQuote is s as the host sends a string of binding data: a JSON
// string holding s as a JSON string ("\"42\"").
func doubleQuote(s string) []byte {
	return quote(string(quote(s)))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var _ http.Handler = (*Host)(nil)
