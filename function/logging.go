package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"

	"github.com/cmkrotator/cmkrotator/handler"
)

// newLogger builds the process logger. JSON (for the host) goes to
// stdout, except records at Error and above, which go to stderr so that
// the host logs them as errors. Text goes to stderr through tint, in
// colour when stderr is a terminal. Both carry invocation ids through
// handler.LogHandler.
func newLogger(format string, level slog.Level, stdout, stderr io.Writer) *slog.Logger {
	if format == "" {
		format = "json"
		if isTerminal(stderr) {
			format = "text"
		}
	}
	var h slog.Handler
	switch format {
	case "text":
		h = tint.NewTextHandler(stderr, &tint.Options{
			Level:      level,
			TimeFormat: "15:04:05.000",
			NoColor:    !isTerminal(stderr),
		})
	default:
		opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationText}
		h = splitHandler{
			low:  slog.NewJSONHandler(stdout, opts),
			high: slog.NewJSONHandler(stderr, opts),
		}
	}
	return slog.New(handler.LogHandler(h))
}

// durationText writes durations as "1.5s" rather than slog's
// nanoseconds, for people reading the host's logs.
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// splitHandler sends errors to one handler and everything else to another.
type splitHandler struct{ low, high slog.Handler }

func (s splitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return s.low.Enabled(ctx, l)
}

func (s splitHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		return s.high.Handle(ctx, r)
	}
	return s.low.Handle(ctx, r)
}

func (s splitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return splitHandler{s.low.WithAttrs(as), s.high.WithAttrs(as)}
}

func (s splitHandler) WithGroup(name string) slog.Handler {
	return splitHandler{s.low.WithGroup(name), s.high.WithGroup(name)}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// since rounds an elapsed time for logs and tables.
func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
