package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodTargets = `{"targets":[{"key":"https://kv.vault.azure.net/keys/cmk","servers":["/subscriptions/s/resourceGroups/rg/providers/Microsoft.FluidRelay/fluidRelayServers/relay"]}]}`

func TestLoadSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "targets.json")
	if err := os.WriteFile(file, []byte(goodTargets), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // the setting named in the error; "" for none
		check   func(t *testing.T, s Settings)
	}{
		{"minimal", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "8080", "ROTATION_TARGETS": goodTargets}, "",
			func(t *testing.T, s Settings) {
				if s.Port != 8080 || s.Targets.Len() != 1 || s.Concurrency != 0 || s.Deadline != 0 || s.DryRun {
					t.Errorf("got %+v, want port 8080, one key and defaults", s)
				}
			}},
		{"everything", map[string]string{
			"FUNCTIONS_CUSTOMHANDLER_PORT": "8080", "ROTATION_TARGETS_FILE": file,
			"AZURE_CLIENT_ID": "c", "IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token",
			"ROTATION_ARM_ENDPOINT": "https://management.usgovcloudapi.net", "ROTATION_ARM_AUDIENCE": "https://management.core.usgovcloudapi.net/",
			"ROTATION_CONCURRENCY": "4", "ROTATION_DEADLINE": "20s", "ROTATION_DRY_RUN": "true",
			"ROTATION_RECONCILE_SCHEDULE": "0 0 */6 * * *", "LOG_LEVEL": "debug", "LOG_FORMAT": "JSON",
		}, "", func(t *testing.T, s Settings) {
			if s.Concurrency != 4 || s.Deadline != 20*time.Second || !s.DryRun || s.ClientID != "c" ||
				s.LogFormat != "json" || s.TargetsSource != "ROTATION_TARGETS_FILE" || s.ReconcileSchedule == "" {
				t.Errorf("got %+v, want every setting read", s)
			}
		}},
		{"deadline in seconds", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "ROTATION_DEADLINE": "25"}, "",
			func(t *testing.T, s Settings) {
				if s.Deadline != 25*time.Second {
					t.Errorf("got %v, want 25s", s.Deadline)
				}
			}},
		{"timespan schedule", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "ROTATION_RECONCILE_SCHEDULE": "01:00:00"}, "", nil},
		{"no port", map[string]string{"ROTATION_TARGETS": goodTargets}, "FUNCTIONS_CUSTOMHANDLER_PORT", nil},
		{"bad port", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "http", "ROTATION_TARGETS": goodTargets}, "FUNCTIONS_CUSTOMHANDLER_PORT", nil},
		{"no map", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1"}, "ROTATION_TARGETS", nil},
		{"both maps", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "ROTATION_TARGETS_FILE": file}, "ROTATION_TARGETS", nil},
		{"bad map", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": `{"targets":[{"key":"https://kv/secrets/x","servers":[]}]}`}, "ROTATION_TARGETS", nil},
		{"map not JSON", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": `targets`}, "ROTATION_TARGETS", nil},
		{"missing map file", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS_FILE": file + ".gone"}, "ROTATION_TARGETS_FILE", nil},
		{"http ARM endpoint", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "ROTATION_ARM_ENDPOINT": "http://x"}, "ROTATION_ARM_ENDPOINT", nil},
		{"zero concurrency", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "ROTATION_CONCURRENCY": "0"}, "ROTATION_CONCURRENCY", nil},
		{"bad deadline", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "ROTATION_DEADLINE": "soon"}, "ROTATION_DEADLINE", nil},
		{"bad dry run", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "ROTATION_DRY_RUN": "maybe"}, "ROTATION_DRY_RUN", nil},
		{"bad schedule", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "ROTATION_RECONCILE_SCHEDULE": "hourly"}, "ROTATION_RECONCILE_SCHEDULE", nil},
		{"bad level", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "LOG_LEVEL": "loud"}, "LOG_LEVEL", nil},
		{"lock container name in the host's storage", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets,
			"ROTATION_LOCK_CONTAINER": "locks", "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k"}, "",
			func(t *testing.T, s Settings) {
				if s.LockContainer != "locks" || !strings.Contains(s.LockConnection, "AccountName=a") {
					t.Errorf("got container %q, connection %q; want locks in account a", s.LockContainer, s.LockConnection)
				}
			}},
		{"lock container name in development storage", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets,
			"ROTATION_LOCK_CONTAINER": "locks", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "",
			func(t *testing.T, s Settings) {
				if s.LockContainer != "locks" || !strings.Contains(s.LockConnection, "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1") {
					t.Errorf("got container %q, connection %q; want locks in Azurite's development account", s.LockContainer, s.LockConnection)
				}
			}},
		{"lock container name in an identity-based account", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets,
			"ROTATION_LOCK_CONTAINER": "locks", "AzureWebJobsStorage__accountName": "acct"}, "",
			func(t *testing.T, s Settings) {
				if s.LockContainer != "https://acct.blob.core.windows.net/locks" || s.LockConnection != "" {
					t.Errorf("got container %q, connection %q; want the container URL in account acct", s.LockContainer, s.LockConnection)
				}
			}},
		{"lock container name in an identity-based blob service", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets,
			"ROTATION_LOCK_CONTAINER": "locks", "AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.usgovcloudapi.net/",
			"AzureWebJobsStorage__accountName": "ignored"}, "",
			func(t *testing.T, s Settings) {
				if s.LockContainer != "https://acct.blob.core.usgovcloudapi.net/locks" {
					t.Errorf("got container %q, want it in the blob service AzureWebJobsStorage__blobServiceUri names", s.LockContainer)
				}
			}},
		{"lock container name without an account", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets,
			"ROTATION_LOCK_CONTAINER": "locks"}, "ROTATION_LOCK_CONTAINER", nil},
		{"lock container name Azure refuses", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets,
			"ROTATION_LOCK_CONTAINER": "Bad_Name", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "ROTATION_LOCK_CONTAINER", nil},
		{"lock container name with a double hyphen", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets,
			"ROTATION_LOCK_CONTAINER": "my--locks", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "ROTATION_LOCK_CONTAINER", nil},
		{"http lock container", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets,
			"ROTATION_LOCK_CONTAINER": "http://acct.blob.core.windows.net/locks"}, "ROTATION_LOCK_CONTAINER", nil},
		{"bad format", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "1", "ROTATION_TARGETS": goodTargets, "LOG_FORMAT": "xml"}, "LOG_FORMAT", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := loadSettings(func(k string) string { return tt.env[k] }, true, true)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				if tt.check != nil {
					tt.check(t, s)
				}
				return
			}
			var se *settingsError
			if !errors.As(err, &se) || se.name != tt.wantErr {
				t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("got a multi-line error %q, want one line", err)
			}
		})
	}
}
