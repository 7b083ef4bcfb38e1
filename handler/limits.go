package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
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

// httpEnvelope bounds the envelope of an HTTP function in JSON mode
// whose route takes bodies of up to limit bytes. The envelope carries the
// body as a JSON string, escaped to at most twice its size, beside the
// headers and Metadata, which maxEnvelope leaves room for; the route then
// applies its own limit to the body itself.
func httpEnvelope(limit int64) int64 {
	return 2*limit + maxEnvelope
}

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
// encoding/json would otherwise accept), a member given twice and
// trailing data are errors, so that a misspelt "dryRun" is refused rather
// than ignored; so is a body that is not an object, null included.
// Errors read as messages for the caller, not as Go; those about
// well-formed JSON of the wrong shape are *invalidError.
func decodeStrict(data []byte, v any, fields ...string) error {
	if err := checkDepth(data, maxDepth); err != nil {
		return err
	}
	if !json.Valid(data) {
		return malformed(data)
	}
	// encoding/json decodes null into a struct as nothing at all.
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return invalidf("the body: want an object, got null")
	}
	if err := checkMembers(data, fields); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return explainJSON(dec.Decode(v))
}

// malformed says where data, which is not one valid JSON value, goes
// wrong.
func malformed(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var skip json.RawMessage
	if err := dec.Decode(&skip); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
			return fmt.Errorf("malformed JSON at byte %d: the body ends early", len(data))
		}
		return explainJSON(err)
	}
	return errors.New("malformed JSON: unexpected data after the JSON value")
}

// invalidError is a body that is well-formed JSON but not what the route
// takes: a member unknown or given twice, a value of the wrong type.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// checkMembers reads the members of a top-level object, which must be
// valid JSON, with a token pass and fails on a name not in fields or
// given twice. Anything but an object is left to the decoder to refuse.
func checkMembers(data []byte, fields []string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := t.(string)
		switch {
		case !slices.Contains(fields, name):
			return invalidf("unknown field %q; want only %s", name, strings.Join(fields, ", "))
		case seen[name]:
			return invalidf("field %s given twice", name)
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// explainJSON rewords encoding/json's type and syntax errors, which name
// Go types and fields, in terms of the JSON the caller sent; a type error
// becomes an *invalidError. Other errors, and nil, are returned as they
// are.
func explainJSON(err error) error {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		what := "the body"
		if te.Field != "" {
			what = "field " + te.Field
		}
		return invalidf("%s: want %s, got %s", what, jsonKind(te.Type), jsonValue(te.Value))
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Errorf("malformed JSON at byte %d: %s", se.Offset, se.Error())
	}
	return err
}

// jsonKind names the JSON value a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another value"
}

// jsonValue names the JSON value encoding/json describes in
// UnmarshalTypeError.Value: "string", "bool", "number 1.5", ….
func jsonValue(v string) string {
	switch {
	case v == "bool":
		return "a boolean"
	case v == "array", v == "object":
		return "an " + v
	case strings.HasPrefix(v, "number "):
		return "the number " + strings.TrimPrefix(v, "number ")
	case v == "":
		return "another value"
	}
	return "a " + v
}
