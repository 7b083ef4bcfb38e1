package main

import (
	"io"
	"testing"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// The exit of rotate, replay and reconcile: 1 when anything needs a
// person, even beside failures a later run could fix; 3 only when a later
// run could finish everything.
func TestReportsExitRule(t *testing.T) {
	ok := rotation.ServerResult{ID: "/s/ok", Outcome: rotation.Rotated}
	clears := rotation.ServerResult{ID: "/s/throttled", Outcome: rotation.Failed, Retryable: true}
	stuck := rotation.ServerResult{ID: "/s/gone", Outcome: rotation.Failed}
	mismatch := rotation.ServerResult{ID: "/s/other", Outcome: rotation.Skipped, Reason: rotation.ReasonMismatch + ": uses …"}
	report := func(retryable bool, servers ...rotation.ServerResult) rotation.Report {
		return rotation.Report{Key: "https://kv1.vault.azure.net/keys/cmk", Servers: servers, Retryable: retryable}
	}
	keyError := func(retryable bool) rotation.Report {
		return rotation.Report{Key: "https://kv1.vault.azure.net/keys/cmk", Error: "x", Retryable: retryable}
	}

	tests := []struct {
		name          string
		reps          []rotation.Report
		rotate, recon int
	}{
		{"all done", []rotation.Report{report(false, ok)}, exitOK, exitOK},
		{"only retryable", []rotation.Report{report(true, ok, clears)}, exitRetryable, exitRetryable},
		{"retryable key error", []rotation.Report{keyError(true)}, exitRetryable, exitRetryable},
		{"failed for good", []rotation.Report{report(false, ok, stuck)}, exitFailed, exitFailed},
		{"both in one report", []rotation.Report{report(false, clears, stuck)}, exitFailed, exitFailed},
		{"both across reports", []rotation.Report{report(true, clears), keyError(false)}, exitFailed, exitFailed},
		{"mismatch beside retryable", []rotation.Report{report(true, clears, mismatch)}, exitRetryable, exitFailed},
		{"mismatch alone", []rotation.Report{report(false, ok, mismatch)}, exitOK, exitFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(reportsExit(tt.reps), io.Discard); got != tt.rotate {
				t.Errorf("reportsExit: got %d, want %d", got, tt.rotate)
			}
			if got := exitCode(reconcileExit(tt.reps), io.Discard); got != tt.recon {
				t.Errorf("reconcileExit: got %d, want %d", got, tt.recon)
			}
		})
	}
}
