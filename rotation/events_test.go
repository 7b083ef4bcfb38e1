package rotation_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azsystemevents"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/rotation"
)

const (
	exampleVersion = "ee059b2bb5bc48398a53b168c6cdcb10"
	exampleID      = "00eccf70-95a7-4e7c-8299-2eb17ee9ad64"
)

var exampleTime = time.Date(2019, 7, 25, 1, 8, 33, 103673600, time.UTC)

func readExample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The official examples (secret events, adapted to keys), decoded.
func TestDecodeEvents_Examples(t *testing.T) {
	key := rotation.KeyRef{Vault: "sample-kv.vault.azure.net", Name: "newkey", Version: exampleVersion}
	want := rotation.Event{
		ID:        exampleID,
		Type:      rotation.TypeKeyNewVersionCreated,
		Schema:    rotation.SchemaEventGrid,
		Subject:   "newkey",
		Time:      exampleTime,
		Key:       key,
		VaultName: "sample-kv",
		NotBefore: time.Unix(1559081980, 0).UTC(),
		Expires:   time.Unix(1559082102, 0).UTC(),
	}
	cloud := want
	cloud.Schema = rotation.SchemaCloudEvents

	tests := []struct {
		file string
		want rotation.Event
	}{
		{"event-grid-schema.key_new_version_created.json", want},
		{"legacy.key_new_version_created.json", want},
		{"cloud-events-schema.key_new_version_created.json", cloud},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data := readExample(t, tt.file)
			for _, body := range [][]byte{data, []byte("[" + string(data) + "]")} {
				got, err := rotation.DecodeEvents(body)
				if err != nil {
					t.Fatalf("DecodeEvents: %v", err)
				}
				if diff := cmp.Diff([]rotation.Event{tt.want}, got); diff != "" {
					t.Errorf("DecodeEvents mismatch (-want +got):\n%s", diff)
				}
				if !got[0].Rotates() {
					t.Errorf("Rotates() = false, want true")
				}
			}
		})
	}
}

// eventWithData wraps data in an Event Grid envelope.
func eventWithData(typ, data string) string {
	return `{"id":"e1","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
		"subject":"k1","eventType":"` + typ + `","eventTime":"2024-01-02T03:04:05Z","data":` + data +
		`,"dataVersion":"1","metadataVersion":"1"}`
}

func TestDecodeEvent_OddData(t *testing.T) {
	const v = "0123456789abcdef0123456789abcdef"
	kid := "https://kv1.vault.azure.net/keys/k1/" + v
	clean := rotation.Event{
		ID: "e1", Type: rotation.TypeKeyNewVersionCreated, Schema: rotation.SchemaEventGrid, Subject: "k1",
		Time:      time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		Key:       rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1", Version: v},
		VaultName: "kv1",
		NotBefore: time.Unix(1559081980, 0).UTC(),
	}
	withExp := func(e rotation.Event, exp int64) rotation.Event { e.Expires = time.Unix(exp, 0).UTC(); return e }
	versionless := clean
	versionless.Key.Version = ""
	noTimes := func(e rotation.Event) rotation.Event { e.NotBefore, e.Expires = time.Time{}, time.Time{}; return e }

	tests := []struct {
		name string
		data string
		want rotation.Event
	}{
		{"clean", `{"Id":"` + kid + `","VaultName":"kv1","ObjectType":"Key","ObjectName":"k1","Version":"` + v + `","NBF":1559081980,"EXP":null}`, clean},
		{"stray space, camelCase, string NBF", `{"Id":"` + kid + `","vaultName":"kv1","objectName ":"k1","Version":" ` + v + `","NBF":"1559081980","EXP":null}`, clean},
		{"lower case keys", `{"id":"` + kid + `","vaultname":"kv1","version":"` + v + `","nbf":1559081980}`, clean},
		{"upper case keys with spaces", `{" ID ":"` + kid + `"," VAULTNAME":"kv1","NBF":" 1559081980 "}`, clean},
		{"EXP number exact to the second", `{"Id":"` + kid + `","VaultName":"kv1","NBF":1559081980,"EXP":1701185990}`, withExp(clean, 1701185990)},
		{"EXP in exponent form", `{"Id":"` + kid + `","VaultName":"kv1","NBF":1559081980,"EXP":1.70118599e9}`, withExp(clean, 1701185990)},
		{"EXP empty string", `{"Id":"` + kid + `","VaultName":"kv1","NBF":1559081980,"EXP":""}`, clean},
		{"Version missing", `{"Id":"` + kid + `","VaultName":"kv1","NBF":1559081980}`, clean},
		{"Version odd, Id wins", `{"Id":"` + kid + `","VaultName":"kv1","Version":"not a version!","NBF":1559081980}`, clean},
		{"Id without version, Version fills it", `{"Id":"https://kv1.vault.azure.net/keys/k1/","VaultName":"kv1","Version":"` + v + `","NBF":1559081980}`, clean},
		{"Id without version, no Version", `{"Id":"https://kv1.vault.azure.net/keys/k1/","VaultName":"kv1","NBF":1559081980}`, versionless},
		{"NBF not a time, EXP an object: left out", `{"Id":"` + kid + `","VaultName":"kv1","NBF":"soon","EXP":{}}`, noTimes(clean)},
		{"data as a JSON string", strings.ReplaceAll(`"{'Id':'`+kid+`','VaultName':'kv1','NBF':1559081980}"`, `'`, `\"`), clean},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rotation.DecodeEvent([]byte(eventWithData(rotation.TypeKeyNewVersionCreated, tt.data)))
			if err != nil {
				t.Fatalf("DecodeEvent: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeEvent mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// azsystemevents' typed data keeps NBF/EXP as float32 and matches keys
// case-sensitively; this is why the decoder is our own.
func TestDecodeEvent_ExactWhereTypedDataRounds(t *testing.T) {
	data := `{"Id":"https://kv1.vault.azure.net/keys/k1/v1","EXP":1701185990}`
	var typed azsystemevents.KeyVaultKeyNewVersionCreatedEventData
	if err := json.Unmarshal([]byte(data), &typed); err != nil {
		t.Fatal(err)
	}
	if typed.EXP == nil || int64(*typed.EXP) == 1701185990 {
		t.Fatalf("typed EXP = %v; the float32 rounding this test documents is gone", typed.EXP)
	}

	e, err := rotation.DecodeEvent([]byte(eventWithData(rotation.TypeKeyNewVersionCreated, data)))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Expires.Unix(); got != 1701185990 {
		t.Errorf("got EXP %d, want 1701185990", got)
	}
}

func TestDecodeEvent_Envelopes(t *testing.T) {
	data := `{"Id":"https://kv1.vault.azure.net/keys/k1/v1"}`
	tests := []struct {
		name    string
		body    string
		want    rotation.Event
		rotates bool
	}{
		{
			name:    "near expiry never rotates",
			body:    eventWithData(rotation.TypeKeyNearExpiry, data),
			want:    rotation.Event{ID: "e1", Type: rotation.TypeKeyNearExpiry, Schema: "EventGrid", Subject: "k1", Time: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Key: rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1", Version: "v1"}},
			rotates: false,
		},
		{
			name: "expired, type in odd case",
			body: eventWithData("microsoft.keyvault.keyexpired", data),
			want: rotation.Event{ID: "e1", Type: rotation.TypeKeyExpired, Schema: "EventGrid", Subject: "k1", Time: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Key: rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1", Version: "v1"}},
		},
		{
			name:    "cloud event with data_base64 and dead-letter metadata",
			body:    `{"specversion":"1.0","id":"c1","source":"/s","type":"Microsoft.KeyVault.KeyNewVersionCreated","time":"2024-01-02T03:04:05Z","data_base64":"eyJJZCI6Imh0dHBzOi8va3YxLnZhdWx0LmF6dXJlLm5ldC9rZXlzL2sxL3YxIn0=","deadletterreason":"MaxDeliveryAttemptsExceeded","deliveryattempts":30}`,
			want:    rotation.Event{ID: "c1", Type: rotation.TypeKeyNewVersionCreated, Schema: "CloudEvents", Time: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Key: rotation.KeyRef{Vault: "kv1.vault.azure.net", Name: "k1", Version: "v1"}, DeadLetterReason: "MaxDeliveryAttemptsExceeded", DeliveryAttempts: 30},
			rotates: true,
		},
		{
			name: "event grid dead letter, attempts as string",
			body: `{"id":"e2","eventType":"Microsoft.Storage.BlobCreated","eventTime":"bad time","data":{"url":"x"},"deadLetterReason":"UndeliverableDueToProbationCausedByClientError","deliveryAttempts":"3"}`,
			want: rotation.Event{ID: "e2", Type: "Microsoft.Storage.BlobCreated", Schema: "EventGrid", DeadLetterReason: "UndeliverableDueToProbationCausedByClientError", DeliveryAttempts: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rotation.DecodeEvent([]byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeEvent: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeEvent mismatch (-want +got):\n%s", diff)
			}
			if got.Rotates() != tt.rotates {
				t.Errorf("Rotates() = %v, want %v", got.Rotates(), tt.rotates)
			}
		})
	}
}

func TestDecodeEvent_Errors(t *testing.T) {
	kid := `"https://kv1.vault.azure.net/keys/k1/v1"`
	for name, body := range map[string]string{
		"not JSON":        `{"id":`,
		"null":            `null`,
		"no type":         `{"id":"e1","data":{"Id":` + kid + `}}`,
		"no data":         `{"id":"e1","eventType":"Microsoft.KeyVault.KeyNewVersionCreated"}`,
		"no Id":           eventWithData(rotation.TypeKeyNewVersionCreated, `{"VaultName":"kv1","Version":"v1"}`),
		"secret Id":       eventWithData(rotation.TypeKeyNewVersionCreated, `{"Id":"https://kv1.vault.azure.net/secrets/k1/v1"}`),
		"http Id":         eventWithData(rotation.TypeKeyNewVersionCreated, `{"Id":"http://kv1.vault.azure.net/keys/k1/v1"}`),
		"data an array":   eventWithData(rotation.TypeKeyNewVersionCreated, `[1]`),
		"bad data_base64": `{"specversion":"1.0","id":"c1","type":"Microsoft.KeyVault.KeyNewVersionCreated","data_base64":"!!"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := rotation.DecodeEvent([]byte(body)); err == nil {
				t.Errorf("DecodeEvent = %+v, want error", got)
			}
		})
	}
}

// Names that fold together with different values make the event
// undecodable, every time, naming both; with the same value they are one.
func TestDecodeEvent_FoldedNamesDisagree(t *testing.T) {
	const a, b = "https://kv1.vault.azure.net/keys/a/v1", "https://kv1.vault.azure.net/keys/b/v1"
	tests := []struct {
		name, body, want string
	}{
		{"data", eventWithData(rotation.TypeKeyNewVersionCreated, `{"id":"`+b+`","Id":"`+a+`"}`),
			`decode event "e1": data: has both "Id" and "id", with different values`},
		{"data, stray space", eventWithData(rotation.TypeKeyNewVersionCreated, `{"Id":"`+a+`"," id ":"`+b+`"}`),
			`decode event "e1": data: has both " id " and "Id", with different values`},
		{"envelope", `{"id":"e1","ID":"e2","eventType":"` + rotation.TypeKeyNewVersionCreated + `","data":{"Id":"` + a + `"}}`,
			`decode event: has both "ID" and "id", with different values`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 {
				got, err := rotation.DecodeEvent([]byte(tt.body))
				if err == nil {
					t.Fatalf("got %+v, want error %q", got, tt.want)
				}
				if err.Error() != tt.want {
					t.Fatalf("got error %q, want %q", err, tt.want)
				}
			}
		})
	}

	same := eventWithData(rotation.TypeKeyNewVersionCreated, `{"Id":"`+a+`","id": "`+a+`","ID":"https:\/\/kv1.vault.azure.net\/keys\/a\/v1"}`)
	got, err := rotation.DecodeEvent([]byte(same))
	if err != nil {
		t.Fatalf("same value under three spellings: %v", err)
	}
	if got.Key.String() != a {
		t.Errorf("got key %s, want %s", got.Key, a)
	}
}

// The id and type of an undecodable event read the same on every decode.
func TestDecodeBatch_FoldedNamesDisagree(t *testing.T) {
	body := `[{"id":"e1","ID":"e2","eventType":"` + rotation.TypeKeyNewVersionCreated +
		`","EventType":"` + rotation.TypeKeyNearExpiry + `","data":{}},` +
		`{"id":"e3","Id":"e3","eventType":"` + rotation.TypeKeyNewVersionCreated + `","type":"y","data":{"Id":"nope"}}]`
	want := []rotation.BadEvent{{Index: 0}, {Index: 1, ID: "e3", Type: rotation.TypeKeyNewVersionCreated}}
	for range 200 {
		b, err := rotation.DecodeBatch([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		var got []rotation.BadEvent
		for _, e := range b.Bad {
			got = append(got, rotation.BadEvent{Index: e.Index, ID: e.ID, Type: e.Type})
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("bad events (-want +got):\n%s", diff)
		}
	}
}

// Decoding errors say what was wanted and what was found in JSON's terms,
// never in encoding/json's Go types.
func TestDecode_ErrorsInJSONTerms(t *testing.T) {
	typ := rotation.TypeKeyNewVersionCreated
	exact := map[string]string{
		`42`:                        "decode event: want a JSON object, got a number",
		`true`:                      "decode event: want a JSON object, got a boolean",
		`"x"`:                       "decode event: want a JSON object, got a string",
		`[1]`:                       "decode event: want a JSON object, got an array",
		``:                          "decode event: want a JSON object, got nothing",
		`{"id":`:                    "decode event: want a JSON object, got invalid JSON: unexpected end of JSON input",
		eventWithData(typ, `[1]`):   `decode event "e1": data: want a JSON object, got an array`,
		eventWithData(typ, `"42"`):  `decode event "e1": data: want a JSON object, got a number`,
		eventWithData(typ, `"{x"`):  `decode event "e1": data: want a JSON object, got invalid JSON: invalid character 'x' looking for beginning of object key string`,
		eventWithData(typ, `false`): `decode event "e1": data: want a JSON object, got a boolean`,
	}
	for body, want := range exact {
		if _, err := rotation.DecodeEvent([]byte(body)); err == nil || err.Error() != want {
			t.Errorf("DecodeEvent(%s): got error %v, want %q", body, err, want)
		}
	}

	bodies := []string{``, `42`, `"x"`, `null`, `true`, `[`, `[1,`, `[1, "x", null, [], {}]`, `{"id":1}`,
		`{"id":"e1","eventType":5}`, `{"id":"e1","eventType":"` + typ + `","data":5}`,
		`{"specversion":"1.0","id":"c1","type":"` + typ + `","data_base64":"NDI="}`,
		`{"specversion":"1.0","id":"c1","type":"` + typ + `","data_base64":"!!"}`,
		eventWithData(typ, `{"Id":5}`), eventWithData(typ, `{"Id":"x","NBF":[],"EXP":{}}`),
	}
	for _, body := range bodies {
		var errs []error
		_, err := rotation.DecodeEvent([]byte(body))
		errs = append(errs, err)
		_, err = rotation.DecodeEvents([]byte(body))
		errs = append(errs, err)
		b, err := rotation.DecodeBatch([]byte(body))
		errs = append(errs, err)
		for _, bad := range b.Bad {
			errs = append(errs, bad.Err)
		}
		for _, err := range errs {
			if err == nil {
				continue
			}
			for _, leak := range []string{"Go value", "json: cannot unmarshal", "json.RawMessage", "map["} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("decoding %s: got error %q, want it in JSON's terms, without %q", body, err, leak)
				}
			}
		}
	}
}

func TestDecodeEvents_Batch(t *testing.T) {
	good := eventWithData(rotation.TypeKeyNewVersionCreated, `{"Id":"https://kv1.vault.azure.net/keys/k1/v1"}`)
	bad := eventWithData(rotation.TypeKeyNewVersionCreated, `{"Id":"nope"}`)

	got, err := rotation.DecodeEvents([]byte(" [" + good + "," + bad + "," + good + "]\n"))
	if err == nil || !strings.Contains(err.Error(), "event 1") {
		t.Errorf("got error %v, want one naming event 1", err)
	}
	if len(got) != 2 {
		t.Errorf("got %d events, want the 2 that decoded", len(got))
	}

	if got, err := rotation.DecodeEvents([]byte(`[]`)); err != nil || len(got) != 0 {
		t.Errorf("DecodeEvents([]) = %v, %v; want no events, no error", got, err)
	}
	for body, want := range map[string]string{
		``:    "decode events: want a JSON object or array, got nothing",
		`"x"`: "decode events: want a JSON object or array, got a string",
		`42`:  "decode events: want a JSON object or array, got a number",
		`[1,`: "decode events: want a JSON object or array, got invalid JSON: unexpected end of JSON input",
	} {
		if _, err := rotation.DecodeEvents([]byte(body)); err == nil || err.Error() != want {
			t.Errorf("DecodeEvents(%q): got error %v, want %q", body, err, want)
		}
	}
}

func BenchmarkDecodeEvents(b *testing.B) {
	data := readExample(b, "event-grid-schema.key_new_version_created.json")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rotation.DecodeEvents(data); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeEvents(f *testing.F) {
	for _, name := range []string{
		"event-grid-schema.key_new_version_created.json",
		"cloud-events-schema.key_new_version_created.json",
		"legacy.key_new_version_created.json",
	} {
		f.Add(readExample(f, name))
	}
	f.Add([]byte(eventWithData(rotation.TypeKeyNewVersionCreated, `{"Id":"https://kv1.vault.azure.net/keys/k1/","objectName ":"k1","Version":" v","NBF":"1559081980","EXP":null}`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := rotation.DecodeEvents(data)
		for _, e := range events {
			if e.Type == "" {
				t.Errorf("decoded event %q without a type", e.ID)
			}
			if e.Rotates() && e.Key.Name == "" {
				t.Errorf("rotation event %q without a key (err %v)", e.ID, err)
			}
		}
	})
}

func TestReports(t *testing.T) {
	a := &rotation.Report{Key: "https://v.vault.azure.net/keys/a"}
	b := &rotation.Report{Key: "https://v.vault.azure.net/keys/b"}
	tests := []struct {
		name    string
		results []rotation.EventResult
		want    []rotation.Report
	}{
		{"none", nil, nil},
		{"ignored only", []rotation.EventResult{{EventID: "1", Ignored: rotation.IgnoredNotRotation}}, nil},
		{"shared once, in first-event order", []rotation.EventResult{
			{EventID: "1", Report: b}, {EventID: "2", Ignored: rotation.IgnoredNotSubscribed},
			{EventID: "3", Report: a}, {EventID: "4", Report: b},
		}, []rotation.Report{*b, *a}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, rotation.Reports(tt.results)); diff != "" {
				t.Errorf("Reports (-want +got):\n%s", diff)
			}
		})
	}
}
