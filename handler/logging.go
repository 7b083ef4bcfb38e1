package handler

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
)

// maxInvocationLogs bounds the lines kept for one invocation's Logs; the
// process log keeps everything.
const maxInvocationLogs = 200

type invocationKey struct{}

// invocation collects what one host invocation logged, for the Logs array
// of its answer, and names it on every line.
type invocation struct {
	id string

	mu      sync.Mutex
	lines   []string
	dropped int
}

// withInvocation returns a context whose log lines carry invocation_id id
// and are kept for the invocation's answer.
func withInvocation(ctx context.Context, id string) (context.Context, *invocation) {
	inv := &invocation{id: id}
	return context.WithValue(ctx, invocationKey{}, inv), inv
}

func invocationFrom(ctx context.Context) *invocation {
	inv, _ := ctx.Value(invocationKey{}).(*invocation)
	return inv
}

func (inv *invocation) add(line string) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if len(inv.lines) >= maxInvocationLogs {
		inv.dropped++
		return
	}
	inv.lines = append(inv.lines, line)
}

// Logs returns the lines kept so far, with a last line counting those left
// out.
func (inv *invocation) Logs() []string {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	out := append([]string(nil), inv.lines...)
	if inv.dropped > 0 {
		out = append(out, fmt.Sprintf("%d more lines in the process log", inv.dropped))
	}
	return out
}

// LogHandler wraps h so that every record logged with the context of a
// host invocation (the ...Context slog methods, or LogAttrs) carries
// invocation_id, taken from the host's X-Azure-Functions-InvocationId
// header, and is also returned to the host in the invocation's Logs.
// Records logged without such a context pass through unchanged.
func LogHandler(h slog.Handler) slog.Handler {
	return &logHandler{next: h}
}

type logHandler struct {
	next   slog.Handler
	prefix string // attrs added with WithAttrs, already formatted for Logs lines
	group  string // open group, dotted, for Logs lines
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	inv := invocationFrom(ctx)
	if inv == nil {
		return h.next.Handle(ctx, r)
	}
	inv.add(h.line(r))
	r = r.Clone()
	r.AddAttrs(slog.String("invocation_id", inv.id))
	return h.next.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		writeAttr(&b, h.group, a)
	}
	return &logHandler{next: h.next.WithAttrs(as), prefix: b.String(), group: h.group}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &logHandler{next: h.next.WithGroup(name), prefix: h.prefix, group: g}
}

// line renders r as "LEVEL message k=v …" for the host's Logs array.
func (h *logHandler) line(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(' ')
	b.WriteString(r.Message)
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	return b.String()
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, ga := range a.Value.Group() {
			writeAttr(b, key, ga)
		}
		return
	}
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		v = strconv.Quote(v)
	}
	b.WriteString(" " + key + "=" + v)
}
