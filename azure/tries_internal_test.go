package azure

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// A failed try's URL loses its query and user info, where a SAS
// signature or a password would be, before it reaches an error.
func TestTryFailure_RedactsURL(t *testing.T) {
	err := &url.Error{Op: "Get", URL: "https://user:pw@acct.blob.core.windows.net/c/b?sv=2024&sig=c2VjcmV0#f",
		Err: errors.New("dial tcp 10.0.0.1:443: connect: connection refused")}

	got := tryFailure(err)

	want := "Get https://acct.blob.core.windows.net/c/b: dial tcp 10.0.0.1:443: connect: connection refused"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, secret := range []string{"sig=", "c2VjcmV0", "pw"} {
		if strings.Contains(got, secret) {
			t.Errorf("got %q, which holds %q", got, secret)
		}
	}
}
