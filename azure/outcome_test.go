package azure_test

import (
	"net/http"
	"path"
	"testing"
	"testing/synctest"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// One server that Resource Manager keeps answering 503 and one that is
// gone: a retry could move the first, never the second. The report is
// not Final (a redelivery makes progress) and not Retryable (a retry
// cannot finish it: a person is needed for the gone one).
func TestRotate_RetryableBesideFinalFailure(t *testing.T) {
	f := setup(t, 2)
	v2 := f.newVersion(t)
	f.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch,
		PathSuffix: path.Base(f.ids[0]), Status: http.StatusServiceUnavailable})
	if err := f.emu.DeleteServer(f.ids[1]); err != nil {
		t.Fatal(err)
	}

	synctest.Test(t, func(t *testing.T) {
		r := f.rotatorOver(t, transporter(f), nil)
		rep := r.Rotate(t.Context(), rotation.Request{Key: f.key.WithVersion(v2.Version)})

		got := map[string]rotation.ServerResult{}
		for _, s := range rep.Servers {
			got[s.ID] = s
		}
		if s := got[f.ids[0]]; s.Outcome != rotation.Failed || !s.Retryable {
			t.Errorf("server under 503: got %s retryable=%t (%s), want failed and retryable", s.Outcome, s.Retryable, s.Reason)
		}
		if s := got[f.ids[1]]; s.Outcome != rotation.Failed || s.Retryable {
			t.Errorf("gone server: got %s retryable=%t (%s), want failed for good", s.Outcome, s.Retryable, s.Reason)
		}
		if rep.Final() {
			t.Error("got Final, want not final: a retry would move the server under 503")
		}
		if rep.Retryable {
			t.Error("got Retryable, want false: no retry can finish the gone server")
		}
	})
}
