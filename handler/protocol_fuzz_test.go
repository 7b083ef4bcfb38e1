package handler

import (
	"encoding/json"
	"testing"
)

// FuzzEnvelope feeds arbitrary bytes to the envelope decoder: it must
// never panic, and a binding it returns is always a JSON object or array.
func FuzzEnvelope(f *testing.F) {
	f.Add([]byte(`{"Data":{"event":{"id":"1"}},"Metadata":{"sys":{"MethodName":"KeyNewVersionCreated"}}}`))
	f.Add([]byte(`{"Data":{"event":"{\"id\":\"1\"}"},"Metadata":{}}`))
	f.Add([]byte(`{"Data":{"event":"\"{\\\"id\\\":1}\""}}`))
	f.Add([]byte(`{"Data":{"event":[{"id":"1"}]},"Metadata":{"RetryContext":{"RetryCount":2}}}`))
	f.Add([]byte(`[[[[[[`))
	f.Add([]byte(`{"Data":{"event":"{x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeInvokeRequest(data)
		if err != nil {
			return
		}
		_, _ = req.Retry()
		b, err := req.Binding("event")
		if err != nil {
			return
		}
		if (b[0] != '{' && b[0] != '[') || !json.Valid(b) {
			t.Errorf("got binding %q, want a valid JSON object or array", b)
		}
	})
}
