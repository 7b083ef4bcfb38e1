package main

import (
	"testing"

	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/rotation"
)

func TestStatusExitRule(t *testing.T) {
	server := func(state string) rotation.ServerStatus {
		return rotation.ServerStatus{ID: "/s/" + state, State: state}
	}
	clears := func(state string) rotation.ServerStatus {
		return rotation.ServerStatus{ID: "/s/" + state, State: state, Error: "x", Retryable: true}
	}
	stuck := func(state string) rotation.ServerStatus {
		return rotation.ServerStatus{ID: "/s/" + state, State: state, Error: "x"}
	}
	refused := &handler.CredentialStatus{OK: false, Error: "managed identity refused (400)"}
	for _, tt := range []struct {
		name      string
		cred      *handler.CredentialStatus
		keyErr    string
		keyClears bool
		servers   []rotation.ServerStatus
		want      int
	}{
		{"all fine", nil, "", false, []rotation.ServerStatus{server(rotation.StateCurrent), server(rotation.StateLagging),
			server(rotation.StateAhead), server(rotation.StateVersionless)}, exitOK},
		{"throttled reads", nil, "", false, []rotation.ServerStatus{clears(rotation.StateUnreachable)}, exitRetryable},
		{"unreadable for good", nil, "", false, []rotation.ServerStatus{stuck(rotation.StateUnreachable)}, exitFailed},
		{"refused credential", refused, "", false, []rotation.ServerStatus{clears(rotation.StateUnreachable)}, exitRetryable},
		{"retryable key error", nil, "read current version: 503", true, nil, exitRetryable},
		{"updating", nil, "", false, []rotation.ServerStatus{clears(rotation.StateUnsettled)}, exitRetryable},
		{"key not found", nil, "read current version: not found", false, nil, exitFailed},
		{"current version expired", nil, "current version cannot protect a server: expired", false, nil, exitFailed},
		{"update failed", nil, "", false, []rotation.ServerStatus{stuck(rotation.StateUnsettled)}, exitFailed},
		{"gone", nil, "", false, []rotation.ServerStatus{server(rotation.StateGone)}, exitFailed},
		{"disabled", nil, "", false, []rotation.ServerStatus{server(rotation.StateDisabled)}, exitFailed},
		{"expired", nil, "", false, []rotation.ServerStatus{server(rotation.StateExpired)}, exitFailed},
		{"not found", nil, "", false, []rotation.ServerStatus{server(rotation.StateNotFound)}, exitFailed},
		{"mismatch", nil, "", false, []rotation.ServerStatus{server(rotation.StateMismatch)}, exitFailed},
		{"no cmk", nil, "", false, []rotation.ServerStatus{server(rotation.StateNoCMK)}, exitFailed},
		{"a person wins over a retry", refused, "", false, []rotation.ServerStatus{clears(rotation.StateUnreachable),
			server(rotation.StateGone)}, exitFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := handler.StatusResponse{Credential: tt.cred, Status: rotation.Status{Keys: []rotation.KeyStatus{
				{Key: "https://kv.vault.azure.net/keys/cmk", Error: tt.keyErr, Retryable: tt.keyClears, Servers: tt.servers}}}}
			if got := statusExit(st); got != tt.want {
				t.Errorf("got exit %d, want %d", got, tt.want)
			}
		})
	}
}

func TestWithoutID(t *testing.T) {
	const id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.FluidRelay/fluidRelayServers/relay-1"
	for _, tt := range []struct{ msg, want string }{
		{"update key URL: update key URL of " + id + ": throttled, retry after 40s: 429", "update key URL: throttled, retry after 40s: 429"},
		{"read server: get server " + id + ": retryable: 503", "read server: get server: retryable: 503"},
		{"list servers in " + id + ": 403", "list servers: 403"},
		{"server not found", "server not found"},
	} {
		if got := withoutID(tt.msg, id); got != tt.want {
			t.Errorf("withoutID(%q)\ngot  %q\nwant %q", tt.msg, got, tt.want)
		}
	}
}
