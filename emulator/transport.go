package emulator

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
)

// ErrConnectionReset is what InProcessTransport returns for a request that
// a Reset fault dropped. It wraps syscall.ECONNRESET, as a real reset does.
var ErrConnectionReset = fmt.Errorf("emulator: connection reset by fault: %w", syscall.ECONNRESET)

// InProcessTransport returns a RoundTripper that serves requests through
// the emulator's handlers, chosen by the request's host (a vault, Resource
// Manager, the identity endpoint or the control surface), without sockets
// or TLS. SDK clients using it can run inside a testing/synctest bubble;
// the emulator itself must be started outside the bubble.
func (e *Emulator) InProcessTransport() http.RoundTripper { return inProcess{e} }

type inProcess struct{ e *Emulator }

// Do makes the transport an azcore policy.Transporter as well.
func (t inProcess) Do(req *http.Request) (*http.Response, error) { return t.RoundTrip(req) }

func (t inProcess) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	h := t.e.handlerFor(req.URL.Host)
	if h == nil {
		return nil, fmt.Errorf("emulator: no endpoint serves host %q", req.URL.Host)
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}

	// The handler gets its own request, as a server would build it.
	in := req.Clone(req.Context())
	in.Host = req.URL.Host
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = "127.0.0.1:1"
	if req.Body == nil {
		in.Body = http.NoBody
	}
	if req.Body != nil {
		defer req.Body.Close()
	}

	w := &recorder{header: http.Header{}}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			resp, err = nil, ErrConnectionReset
		}
	}()
	h.ServeHTTP(w, in)
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	body := w.body.Bytes()
	resp = &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
	return resp, nil
}

// handlerFor returns the handler serving host (host:port), or nil.
func (e *Emulator) handlerFor(host string) http.Handler {
	host = strings.ToLower(host)
	for _, l := range []*listener{e.identity, e.arm, e.control} {
		if l != nil && l.host == host {
			return l.handler
		}
	}
	if strings.HasPrefix(host, "localhost:") {
		return e.handlerFor("127.0.0.1:" + portOf(host))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if v := e.vaultByHost(host); v != nil {
		return v.ln.handler
	}
	return nil
}

// recorder is the ResponseWriter of InProcessTransport.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}
