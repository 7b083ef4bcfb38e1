package handler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// Rotator is what the handler needs of *rotation.Rotator.
type Rotator interface {
	Rotate(ctx context.Context, req rotation.Request) rotation.Report
	HandleEvents(ctx context.Context, events []rotation.Event) []rotation.EventResult
	Reconcile(ctx context.Context) []rotation.Report
	Status(ctx context.Context) rotation.Status
}

var _ Rotator = (*rotation.Rotator)(nil)

// CredentialStatus is the outcome of the last check of the credential the
// process uses, shown by /api/status.
type CredentialStatus struct {
	Checked time.Time `json:"checked"`
	OK      bool      `json:"ok"`
	// Unreachable says the token endpoint gave no answer at all (a
	// refused connection, a timeout), which says nothing of the identity.
	Unreachable bool   `json:"unreachable,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Config configures the handler.
type Config struct {
	// Rotator is required. It owns the subscription map: a key it
	// reports not subscribed is answered 404 before any call to Azure.
	Rotator Rotator

	// Credential reports the last credential check for /api/status,
	// waiting for a new check no longer than the request's context; nil
	// leaves it out.
	Credential func(context.Context) CredentialStatus

	// Logger receives request and invocation logs. Wrap its handler with
	// LogHandler so that invocation ids reach every line. Nil: discard.
	Logger *slog.Logger
}

type server struct {
	cfg Config
	log *slog.Logger
	api http.Handler // the API routes, also served in JSON mode
}

// New returns the handler serving every route of the package doc.
func New(cfg Config) (http.Handler, error) {
	if cfg.Rotator == nil {
		return nil, errors.New("new handler: Rotator is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{cfg: cfg, log: cfg.Logger}

	api := http.NewServeMux()
	api.HandleFunc("POST /api/rotate", s.rotate)
	api.HandleFunc("POST /api/replay", s.replay)
	api.HandleFunc("GET /api/status", s.status)
	for _, p := range []struct{ path, allow string }{
		{"/api/rotate", "POST"}, {"/api/replay", "POST"}, {"/api/status", "GET, HEAD"},
	} {
		api.HandleFunc(p.path, methodNotAllowed(p.allow))
	}
	api.HandleFunc("/api/", notFound)
	s.api = api

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", ready)
	mux.HandleFunc("POST /KeyNewVersionCreated", s.keyNewVersionCreated)
	mux.HandleFunc("POST /Reconcile", s.reconcile)
	mux.HandleFunc("POST /Rotate", s.jsonMode("/api/rotate", maxRequest))
	mux.HandleFunc("POST /Replay", s.jsonMode("/api/replay", maxReplay))
	mux.HandleFunc("POST /Status", s.jsonMode("/api/status", maxRequest))
	// The host POSTs every invocation; any other method on a function's
	// route is a person or a probe, told which method the route takes.
	for _, path := range []string{"/KeyNewVersionCreated", "/Reconcile", "/Rotate", "/Replay", "/Status"} {
		mux.HandleFunc(path, methodNotAllowed("POST"))
	}
	mux.HandleFunc("/{$}", methodNotAllowed("GET, HEAD"))
	mux.Handle("/api/", api)
	mux.HandleFunc("/", notFound)
	return s.middleware(mux), nil
}

// ready answers the host's readiness probe.
func ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeProblem(w, r, http.StatusNotFound, problemNotFound, "No such route",
		fmt.Sprintf("%s %s is not a function or API route of this app", r.Method, r.URL.Path))
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeProblem(w, r, http.StatusMethodNotAllowed, problemMethod, "Method not allowed",
			fmt.Sprintf("%s takes %s, not %s", r.URL.Path, allow, r.Method))
	}
}

// statusWriter remembers the status written, for the request log.
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

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// middleware puts the host's invocation id into the request's context (so
// that every log line of the invocation carries it), logs each request
// once, and turns a panic into a 500 that names no internals.
func (s *server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := r.Context()
		if id := r.Header.Get("X-Azure-Functions-InvocationId"); id != "" {
			ctx, _ = withInvocation(ctx, id)
			r = r.WithContext(ctx)
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.ErrorContext(ctx, "request panicked", "path", r.URL.Path, "panic", fmt.Sprint(p),
					"stack", string(debug.Stack()))
				if sw.status == 0 {
					writeJSON(sw, http.StatusInternalServerError, "application/json", InvokeResponse{
						Outputs: map[string]any{}, Logs: []string{"internal error"},
					})
				}
			}
			level := slog.LevelInfo
			if r.URL.Path == "/" {
				level = slog.LevelDebug // the host polls it
			}
			s.log.Log(ctx, level, "request done", "method", r.Method, "path", r.URL.Path,
				"status", sw.status, "elapsed", time.Since(start).Round(time.Millisecond))
		}()
		next.ServeHTTP(sw, r)
	})
}

// invocation returns the context of the invocation r belongs to, creating
// one when the caller sent no invocation id (a direct call, not the host).
func invocationOf(r *http.Request) (context.Context, *invocation) {
	ctx := r.Context()
	if inv := invocationFrom(ctx); inv != nil {
		return ctx, inv
	}
	return withInvocation(ctx, "")
}
