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

// TestCheckSchedule: NCRONTAB's six fields as the timer trigger reads
// them, or a TimeSpan; anything else is named with the field at fault.
func TestCheckSchedule(t *testing.T) {
	for _, v := range []string{
		"0 */30 * * * *", "0 0 */6 * * *", "0 0 2 * * Sun", "0 30 9 * Jan-Mar mon-fri", "0 0 0 1,15 * *",
		"0 5-55/10 8-18 * * 1-5", "*/15 0 0 * * *", "59 59 23 31 12 6", "5/15 * * * * *", "0 0 0 * * Sat,sunday",
		"01:00:00", "00:05:00", "1.00:00:00", "1.01:00:00", "25:00:00:00", "00:00:30.5",
	} {
		if err := checkSchedule(v); err != nil {
			t.Errorf("%q: got %v, want it accepted", v, err)
		}
	}
	for _, tt := range []struct{ v, want string }{
		{"a b c d e f", `second field "a": want *, a number from 0 to 59, a range a-b, a list a,b or a step */n`},
		{"0 60 * * * *", `minute field "60": 60 is out of range 0 to 59`},
		{"0 0 24 * * *", `hour field "24": 24 is out of range 0 to 23`},
		{"0 0 0 0 * *", `day field "0": 0 is out of range 1 to 31`},
		{"0 0 0 * 13 *", `month field "13": 13 is out of range 1 to 12`},
		{"0 0 0 * Foo *", `month field "Foo": want *, a number from 1 to 12 or a month's name`},
		{"0 0 0 * * 7", `day-of-week field "7": 7 is out of range 0 to 6`},
		{"0 0 0 * * Funday", `day-of-week field "Funday": want *, a number from 0 to 6 or a day's name`},
		{"0 */0 * * * *", `minute field "*/0": step 0: want a whole number from 1`},
		{"0 1,,2 * * * *", `minute field "1,,2": an empty item in the list`},
		{"0 1- * * * *", `minute field "1-"`},
		{"0 0 * * *", "want six NCRONTAB fields"},
		{"0 0 * * * * *", "want six NCRONTAB fields"},
		{"hourly", "want six NCRONTAB fields"},
		{"23:60:00", `TimeSpan "23:60:00": minutes 60 is out of range 0 to 59`},
		{"00:00:00", `TimeSpan "00:00:00": an interval of zero`},
		{"1.24:00:00", `TimeSpan "1.24:00:00": hours 24 is out of range 0 to 23`},
		// .NET reads these as 24 and 25 days; whoever wrote them meant hours.
		{"24:00:00", `TimeSpan "24:00:00": the host reads three parts from 24 up as d:hh:mm, so 24 would be days, not hours; write 1.00:00:00 for 24 hours, and days as d.hh:mm:ss`},
		{"25:30:00", `write 1.01:30:00 for 25 hours`},
		{"1:2:x", "hh:mm:ss"},
		{"1", "want six NCRONTAB fields"},
	} {
		err := checkSchedule(tt.v)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want an error with %q", tt.v, err, tt.want)
		}
	}
}

// TestDeadlineBounds: a deadline below a second leaves a rotation no time
// for one call to Azure; one beyond ten minutes outlives any invocation.
func TestDeadlineBounds(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want time.Duration
		err  string
	}{
		{"1s", time.Second, ""},
		{"10m", 10 * time.Minute, ""},
		{"1", time.Second, ""},
		{"1ns", 0, `want a duration from 1s to 10m, got "1ns"`},
		{"999ms", 0, `want a duration from 1s to 10m, got "999ms"`},
		{"0", 0, `want a duration from 1s to 10m, got "0"`},
		{"-5s", 0, `want a duration from 1s to 10m, got "-5s"`},
		{"11m", 0, `want a duration from 1s to 10m, got "11m"`},
	} {
		d, err := parseDeadline(tt.v)
		switch {
		case tt.err == "" && (err != nil || d != tt.want):
			t.Errorf("%q: got %v, %v, want %v", tt.v, d, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: got %v, %v, want an error with %q", tt.v, d, err, tt.err)
		}
	}
}
