package emulator_test

import (
	"encoding/json"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azsystemevents"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// volatile replaces the generated id and time with placeholders.
var volatile = regexp.MustCompile(`"(id|eventTime|time)":"[^"]*"`)

func TestKeyEvent_Shapes(t *testing.T) {
	e := start(t)
	v := e.AddVault("contoso")
	exp := time.Unix(1890000000, 0)
	info, err := v.CreateKey("fluid-cmk", emulator.KeyOptions{Expires: exp})
	if err != nil {
		t.Fatal(err)
	}
	topic := "/subscriptions/" + emulator.DefaultSubscription + "/resourceGroups/" +
		emulator.DefaultResourceGroup + "/providers/Microsoft.KeyVault/vaults/contoso"
	data := `{"Id":"` + info.KID + `","VaultName":"contoso","ObjectType":"Key",` +
		`"ObjectName":"fluid-cmk","Version":"` + info.Version + `","NBF":null,"EXP":1890000000}`

	tests := []struct {
		name string
		ev   any
		want string
	}{
		{"event grid", e.KeyEvent(emulator.KeyNewVersionCreated, info, "contoso"),
			`{"id":"ID","topic":"` + topic + `","subject":"fluid-cmk",` +
				`"eventType":"Microsoft.KeyVault.KeyNewVersionCreated","eventTime":"T","data":` + data +
				`,"dataVersion":"1","metadataVersion":"1"}`},
		{"cloud events", e.KeyCloudEvent(emulator.KeyNewVersionCreated, info, "contoso"),
			`{"specversion":"1.0","id":"ID","source":"` + topic + `","subject":"fluid-cmk",` +
				`"type":"Microsoft.KeyVault.KeyNewVersionCreated","time":"T","data":` + data + `}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			got := volatile.ReplaceAllStringFunc(string(b), func(s string) string {
				switch s[:4] {
				case `"id"`:
					return `"id":"ID"`
				case `"tim`:
					return `"time":"T"`
				}
				return `"eventTime":"T"`
			})
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestKeyEvent_DecodesWithSDK(t *testing.T) {
	e := start(t)
	v := e.AddVault("contoso")
	nbf := time.Unix(1700000000, 0)
	info, err := v.CreateKey("fluid-cmk", emulator.KeyOptions{NotBefore: nbf})
	if err != nil {
		t.Fatal(err)
	}

	eg, _ := json.Marshal([]emulator.EventGridEvent{e.KeyEvent(emulator.KeyNewVersionCreated, info, "contoso")})
	var egs []azsystemevents.EventGridEvent
	if err := json.Unmarshal(eg, &egs); err != nil {
		t.Fatalf("decode Event Grid event: %v", err)
	}
	ce, _ := json.Marshal(e.KeyCloudEvent(emulator.KeyNewVersionCreated, info, "contoso"))
	var cloud messaging.CloudEvent
	if err := json.Unmarshal(ce, &cloud); err != nil {
		t.Fatalf("decode CloudEvent: %v", err)
	}

	for name, raw := range map[string]any{"event grid": egs[0].Data, "cloud events": cloud.Data} {
		var d azsystemevents.KeyVaultKeyNewVersionCreatedEventData
		if err := json.Unmarshal(raw.([]byte), &d); err != nil {
			t.Fatalf("%s: decode data: %v", name, err)
		}
		if *d.ID != info.KID || *d.Version != info.Version || *d.ObjectType != "Key" || d.EXP != nil {
			t.Errorf("%s: got %+v, want %s with no EXP", name, d, info.KID)
		}
		// float32 rounds Unix seconds; compare within a minute.
		if d.NBF == nil || abs(int64(*d.NBF)-nbf.Unix()) > 60 {
			t.Errorf("%s: got NBF %v, want about %s", name, d.NBF, strconv.FormatInt(nbf.Unix(), 10))
		}
	}
	if *egs[0].EventType != azsystemevents.TypeKeyVaultKeyNewVersionCreated ||
		cloud.Type != azsystemevents.TypeKeyVaultKeyNewVersionCreated {
		t.Errorf("got types %s and %s, want KeyNewVersionCreated", *egs[0].EventType, cloud.Type)
	}
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}
