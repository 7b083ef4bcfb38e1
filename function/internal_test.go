package main

import (
	"testing"

	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/rotation"
)

func TestStatusExitRule(t *testing.T) {
	server := func(state, msg string) rotation.ServerStatus {
		return rotation.ServerStatus{ID: "/s/" + state, State: state, Error: msg}
	}
	refused := &handler.CredentialStatus{OK: false, Error: "managed identity refused (400)"}
	for _, tt := range []struct {
		name    string
		cred    *handler.CredentialStatus
		keyErr  string
		servers []rotation.ServerStatus
		want    int
	}{
		{"all fine", nil, "", []rotation.ServerStatus{server(rotation.StateCurrent, ""), server(rotation.StateLagging, ""),
			server(rotation.StateAhead, ""), server(rotation.StateVersionless, "")}, exitOK},
		{"throttled reads", nil, "", []rotation.ServerStatus{server(rotation.StateUnreachable, "get server: retryable: 429")}, exitRetryable},
		{"refused credential", refused, "", []rotation.ServerStatus{server(rotation.StateUnreachable, "x")}, exitRetryable},
		{"retryable key error", nil, "read current version: get key: retryable: 503", nil, exitRetryable},
		{"throttled key", nil, "read current version: get key: throttled, retry after 40s: 429", nil, exitRetryable},
		{"updating", nil, "", []rotation.ServerStatus{server(rotation.StateUnsettled, "provisioningState Updating")}, exitRetryable},
		{"key not found", nil, "read current version: get key: not found: 404", nil, exitFailed},
		{"current version expired", nil, "current version cannot protect a server: expired", nil, exitFailed},
		{"update failed", nil, "", []rotation.ServerStatus{server(rotation.StateUnsettled, "provisioningState Failed")}, exitFailed},
		{"gone", nil, "", []rotation.ServerStatus{server(rotation.StateGone, "")}, exitFailed},
		{"disabled", nil, "", []rotation.ServerStatus{server(rotation.StateDisabled, "")}, exitFailed},
		{"expired", nil, "", []rotation.ServerStatus{server(rotation.StateExpired, "")}, exitFailed},
		{"not found", nil, "", []rotation.ServerStatus{server(rotation.StateNotFound, "")}, exitFailed},
		{"mismatch", nil, "", []rotation.ServerStatus{server(rotation.StateMismatch, "")}, exitFailed},
		{"no cmk", nil, "", []rotation.ServerStatus{server(rotation.StateNoCMK, "")}, exitFailed},
		{"a person wins over a retry", refused, "", []rotation.ServerStatus{server(rotation.StateUnreachable, "x"),
			server(rotation.StateGone, "")}, exitFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := handler.StatusResponse{Credential: tt.cred, Status: rotation.Status{Keys: []rotation.KeyStatus{
				{Key: "https://kv.vault.azure.net/keys/cmk", Error: tt.keyErr, Servers: tt.servers}}}}
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
