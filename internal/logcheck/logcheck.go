// Package logcheck fails a test whose logs carry a credential: a bearer
// token, an Authorization header's value, key material, a storage or
// Event Grid key, a SAS signature, or a secret the test registered.
//
// It is imported by tests only. Give the product a logger or a writer
// from here instead of a nil Logger or io.Discard:
//
//	cfg := rotation.Config{Keys: keys, Servers: relays, Targets: targets,
//		Logger: logcheck.Logger(t)}
//
// A test that reads its logs keeps them in a Log:
//
//	logs := logcheck.New(t)
//	h, _ := handler.New(handler.Config{Rotator: rot, Logger: logs.Logger()})
//	…
//	if !strings.Contains(logs.String(), "server rotated") { … }
//
// and output captured elsewhere (a command's stdout and stderr, a child
// process's output) goes through Writer, which also writes it on.
//
// Everything written is scanned when the test ends, in t.Cleanup, so that
// lines logged by goroutines after the test's body are seen; a line
// written after that is not. Each finding fails the test with the kind
// of credential and a redacted excerpt, never the secret itself.
//
// Secret adds literal secrets known to a test (the emulator's identity
// header, Azurite's account key) to what every scan looks for.
package logcheck

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// maxReports bounds how many findings of one log fail a test one by one;
// the rest are counted in one more line.
const maxReports = 20

// Log keeps what is written to it and scans it when its test ends. It is
// safe for concurrent use.
type Log struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	tee  io.Writer
	skip []string
}

// New returns an empty Log whose contents are scanned when t ends; each
// finding fails t.
func New(t testing.TB) *Log {
	t.Helper()
	l := &Log{}
	t.Cleanup(func() { l.report(t) })
	return l
}

// Logger returns a JSON logger at Debug, the most verbose level, into a
// new Log for t.
func Logger(t testing.TB) *slog.Logger {
	t.Helper()
	return New(t).Logger()
}

// Writer returns a writer that writes to w (nil: nowhere) and keeps a
// copy scanned when t ends. Writes to w are serialised. A line that
// begins, after leading blanks, with one of skip is written but left out
// of the scan: for output that shows a person a credential on purpose.
func Writer(t testing.TB, w io.Writer, skip ...string) io.Writer {
	t.Helper()
	l := New(t)
	l.tee, l.skip = w, skip
	return l
}

// Write keeps p, and writes it on when the Log was made by Writer.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.tee != nil {
		return l.tee.Write(p)
	}
	return len(p), nil
}

// Handler returns a JSON handler at Debug into l, for a test that wraps
// it (as handler.LogHandler does).
func (l *Log) Handler() slog.Handler {
	return slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})
}

// Logger returns a JSON logger at Debug into l.
func (l *Log) Logger() *slog.Logger { return slog.New(l.Handler()) }

// String returns everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *Log) report(t testing.TB) {
	found := Scan(l.scanned())
	for i, f := range found {
		if i == maxReports {
			t.Errorf("got %d more credentials in the log, want none", len(found)-i)
			break
		}
		t.Errorf("got %s, want no credential in any log line", f)
	}
}

// scanned is the text to scan: everything written, with the lines to
// skip blanked so that line numbers still count every line.
func (l *Log) scanned() string {
	text := l.String()
	if len(l.skip) == 0 {
		return text
	}
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		trimmed := strings.TrimLeft(line, " \t")
		for _, p := range l.skip {
			if strings.HasPrefix(trimmed, p) {
				lines[i] = ""
				break
			}
		}
	}
	return strings.Join(lines, "\n")
}

// secrets holds the literal secrets registered by Secret, for every test
// of the binary: a test's secret has no place in any other test's logs
// either, and azidentity shares tokens across tests.
var secrets struct {
	mu  sync.Mutex
	set map[string]bool
}

// minSecret is the shortest literal secret Secret accepts; a shorter one
// would match ordinary text.
const minSecret = 8

// Secret adds s to what every scan of this test binary looks for, from
// now on. It fails t when s is shorter than 8 characters.
func Secret(t testing.TB, s string) {
	t.Helper()
	if len(s) < minSecret {
		t.Fatalf("got a secret of %d characters to look for, want at least %d", len(s), minSecret)
		return
	}
	secrets.mu.Lock()
	defer secrets.mu.Unlock()
	if secrets.set == nil {
		secrets.set = map[string]bool{}
	}
	secrets.set[s] = true
}

func registered() []string {
	secrets.mu.Lock()
	defer secrets.mu.Unlock()
	out := make([]string, 0, len(secrets.set))
	for s := range secrets.set {
		out = append(out, s)
	}
	return out
}

// Finding is one credential found by Scan.
type Finding struct {
	Kind    Kind
	Line    int    // 1-based line of text the credential starts on
	Excerpt string // the credential's first characters and "…"
}

func (f Finding) String() string {
	return fmt.Sprintf("%s %q on line %d", f.Kind, f.Excerpt, f.Line)
}
