package rotation_test

import (
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/rotation"
)

func TestDecodeBatch(t *testing.T) {
	good := eventWithData(rotation.TypeKeyNewVersionCreated, `{"Id":"https://kv1.vault.azure.net/keys/k1/v1"}`)
	bad := `{"id":"e-bad","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","data":{"Id":"nope"}}`

	b, err := rotation.DecodeBatch([]byte("[" + good + "," + bad + ",42]"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Size != 3 || len(b.Events) != 1 || len(b.Bad) != 2 {
		t.Fatalf("got size %d, %d events, %d bad; want 3, 1, 2", b.Size, len(b.Events), len(b.Bad))
	}
	res := b.Results([]rotation.EventResult{{EventID: b.Events[0].ID, Type: b.Events[0].Type}})
	if res[0].EventID != b.Events[0].ID || res[0].Ignored != "" {
		t.Errorf("result 0: got %+v, want the decoded event's", res[0])
	}
	if res[1].EventID != "e-bad" || res[1].Type != rotation.TypeKeyNewVersionCreated ||
		!strings.HasPrefix(res[1].Ignored, rotation.IgnoredUndecodable) {
		t.Errorf("result 1: got %+v, want e-bad ignored as undecodable", res[1])
	}
	if !strings.HasPrefix(res[2].Ignored, rotation.IgnoredUndecodable) {
		t.Errorf("result 2: got %+v, want ignored as undecodable", res[2])
	}

	for body, want := range map[string]string{
		`42`:  "decode events: want a JSON object or an array of them, got a number",
		`"x"`: "decode events: want a JSON object or an array of them, got a string",
		`[`:   "decode events: want a JSON object or an array of them, got invalid JSON: unexpected end of JSON input",
		` `:   "decode events: want a JSON object or an array of them, got nothing",
	} {
		if _, err := rotation.DecodeBatch([]byte(body)); err == nil || err.Error() != want {
			t.Errorf("DecodeBatch(%q): got error %v, want %q", body, err, want)
		}
	}
}
