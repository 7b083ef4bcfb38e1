package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// Body limits. Every body is read whole before decoding, so each limit is
// also the memory one request may take.
const (
	// maxEnvelope bounds the host's invocation envelopes. Event Grid
	// refuses events over 1 MB; the host copies the event's data into
	// Metadata.data, so an envelope is at most about twice that plus
	// headers. 4 MiB leaves room without letting a stray client exhaust
	// memory.
	maxEnvelope = 4 << 20

	// maxRequest bounds /api/rotate and /api/status bodies, which are a few
	// hundred bytes; 1 MiB is generous and small.
	maxRequest = 1 << 20

	// maxReplay bounds /api/replay: a dead-letter blob holds one or more
	// events of up to 1 MB each. Larger backlogs go through the command
	// line (cmkrotator replay), which streams from a file.
	maxReplay = 8 << 20

	// maxDepth bounds JSON nesting of outside input. Key Vault events nest
	// three levels; 64 is far above any real payload and far below what
	// could make decoding expensive.
	maxDepth = 64
)

var (
	errTooLarge = errors.New("body too large")
	errTooDeep  = errors.New("JSON nested too deeply")
)

// readBody reads r's body up to limit bytes. Beyond the limit it fails
// with an error wrapping errTooLarge, and the server closes the connection
// after the answer instead of draining the rest.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("read request body: %w: limit %d bytes", errTooLarge, limit)
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return data, nil
}

// checkDepth fails when data nests arrays and objects deeper than max. It
// scans bytes only, skipping strings, and does not validate the JSON.
func checkDepth(data []byte, max int) error {
	depth, inString, escaped := 0, false, false
	for _, c := range data {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > max {
				return fmt.Errorf("%w: more than %d levels", errTooDeep, max)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// decodeStrict decodes our own input into v, a struct whose JSON names
// are fields: any other member (also one differing only in case, which
// encoding/json would otherwise accept) and trailing data are errors, so
// that a misspelt "dryRun" is refused rather than ignored.
func decodeStrict(data []byte, v any, fields ...string) error {
	if err := checkDepth(data, maxDepth); err != nil {
		return err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(data, &members); err == nil {
		for name := range members {
			if !slices.Contains(fields, name) {
				return fmt.Errorf("unknown field %q; want only %s", name, strings.Join(fields, ", "))
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}
