package rotation_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// A report whose key could not be handled always says whether a retry
// could help, false included: scripts read the field.
func TestReport_RetryableAlwaysPresent(t *testing.T) {
	b, err := json.Marshal(rotation.Report{Key: "https://kv1.vault.azure.net/keys/cmk", Error: "refused",
		ErrorKind: rotation.KindInvalidTarget, Servers: []rotation.ServerResult{}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"retryable":false`) {
		t.Errorf("got %s, want \"retryable\":false", b)
	}
}
