package main_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// TestRotateThrottledCell: a throttled PATCH reads, in the table, as the
// operation and the throttle, without the server ID or the words that
// joined it.
func TestRotateThrottledCell(t *testing.T) {
	w := seed(t)
	w.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: http.StatusTooManyRequests, RetryAfter: 40 * time.Second})
	code, out, errOut := runBinary(t, append(w.env(t, w.emu.ClientID()), "LOG_LEVEL=error"), "rotate", w.key)
	if code != 3 {
		t.Errorf("got exit %d\n%s%s\nwant 3", code, out, errOut)
	}
	for l := range strings.Lines(out) {
		if !strings.HasPrefix(l, "  rg-cmk/relay-1 ") {
			continue
		}
		if !strings.Contains(l, "update key URL: throttled, retry after 40s") || strings.Contains(l, " of:") || strings.Contains(l, "update key URL: update") {
			t.Errorf("got row %q, want the reason as \"update key URL: throttled, retry after 40s…\"", l)
		}
		return
	}
	t.Errorf("got\n%s\nwant a row for relay-1", out)
}
