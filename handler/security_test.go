package handler_test

import (
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// TestForgedEventsMoveNothing sends events that try to point the
// subscribed servers at another vault or key. None may cause a PATCH or
// any call to a vault other than the subscribed one.
func TestForgedEventsMoveNothing(t *testing.T) {
	p := newInproc(t, 2)
	evil := p.emu.AddVault("evil")
	evilKey, err := evil.CreateKey("cmk", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldKey, err := p.vault.CreateKey("cmk-old", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kv := p.vault.URL()
	data := func(id, vault, name string) string {
		return `{"Id":"` + id + `","VaultName":"` + vault + `","ObjectType":"Key","ObjectName":"` + name + `","Version":"` + p.v1.Version + `"}`
	}
	tests := []struct{ name, data string }{
		{"another vault, same key name", data(evilKey.KID, "kv", "cmk")},
		{"another vault claiming the subscribed vault's name", data(evil.URL()+"/keys/cmk/"+evilKey.Version, "kv", "cmk")},
		{"a key whose name extends the subscribed one", data(oldKey.KID, "kv", "cmk")},
		{"a public vault host with the subscribed name", data("https://kv.vault.azure.net/keys/cmk/"+p.v1.Version, "kv", "cmk")},
		{"a secret URL", data(kv+"/secrets/cmk/"+p.v1.Version, "kv", "cmk")},
		{"a key URL with a query", data(kv+"/keys/cmk/"+p.v1.Version+"?x=https://evil", "kv", "cmk")},
		{"a key URL with user info", data("https://kv@"+strings.TrimPrefix(evil.URL(), "https://")+"/keys/cmk/"+evilKey.Version, "kv", "cmk")},
		{"a path walking out", data(kv+"/keys/../keys/cmk/"+p.v1.Version, "kv", "cmk")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p.emu.ResetRequests()
			ev := `{"id":"forged","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","subject":"cmk",` +
				`"eventTime":"2024-01-01T00:00:00Z","dataVersion":"1","data":` + tt.data + `}`
			if got := p.invoke([]byte(ev)); got != http.StatusOK {
				t.Errorf("got %d, want 200 (a forged event is final)", got)
			}
			for _, r := range p.emu.Requests() {
				if r.Method == http.MethodPatch {
					t.Errorf("got PATCH %s %s, want none", r.Path, r.Body)
				}
				if r.Service == "keyvault" && r.Host != strings.TrimPrefix(kv, "https://") {
					t.Errorf("got %s %s on %s, want no call to another vault", r.Method, r.Path, r.Host)
				}
			}
			for _, id := range p.ids {
				if got, _ := p.emu.ServerKeyURL(id); got != p.v1.KID {
					t.Errorf("%s: got %s, want %s", id, got, p.v1.KID)
				}
			}
		})
	}
}

// TestHostileBodiesBoundedMemory sends oversized and deeply nested bodies
// to every route that reads one. The API refuses each (413, 400); the
// Event Grid trigger drops it and answers 200, so that Event Grid does not
// redeliver it for a day. Either way no route reads a body past its limit,
// one request allocates no more than a bounded multiple of that limit, and
// the process keeps serving.
func TestHostileBodiesBoundedMemory(t *testing.T) {
	p := newInproc(t, 1)
	const mib = 1 << 20
	deep := func(n int) func() io.Reader {
		return func() io.Reader {
			return io.MultiReader(strings.NewReader(strings.Repeat("[", n)), strings.NewReader(strings.Repeat("]", n)))
		}
	}
	huge := func(n int) func() io.Reader {
		return func() io.Reader {
			return io.MultiReader(strings.NewReader(`{"Data":{"event":"`), &repeatReader{b: 'a', n: n}, strings.NewReader(`"}}`))
		}
	}
	nestedEvent := `{"Data":{"event":{"id":"1","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","data":` +
		strings.Repeat(`{"a":`, 100000) + `1` + strings.Repeat(`}`, 100000) + `}}}`
	tests := []struct {
		name     string
		path     string
		body     func() io.Reader
		want     int
		maxAlloc uint64 // bytes allocated by the one request
		maxRead  int64  // bytes of the body read; the route's limit and one buffer
	}{
		{"64 MiB envelope", "/KeyNewVersionCreated", huge(64 * mib), http.StatusOK, 32 * mib, 5 * mib},
		{"64 MiB timer envelope", "/Reconcile", huge(64 * mib), http.StatusOK, 32 * mib, 5 * mib},
		{"64 MiB rotate", "/api/rotate", huge(64 * mib), http.StatusRequestEntityTooLarge, 16 * mib, 2 * mib},
		{"64 MiB replay", "/api/replay", huge(64 * mib), http.StatusRequestEntityTooLarge, 48 * mib, 9 * mib},
		{"1M levels of arrays, envelope", "/KeyNewVersionCreated", deep(1 << 20), http.StatusOK, 16 * mib, 5 * mib},
		{"1M levels of arrays, replay", "/api/replay", deep(1 << 20), http.StatusBadRequest, 16 * mib, 9 * mib},
		{"256k levels of arrays, rotate", "/api/rotate", deep(256 << 10), http.StatusBadRequest, 16 * mib, 2 * mib},
		{"100k levels inside an event", "/KeyNewVersionCreated", func() io.Reader { return strings.NewReader(nestedEvent) },
			http.StatusOK, 16 * mib, 5 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			body := &countingReader{r: tt.body()}
			rec := p.postReader(tt.path, body)
			runtime.ReadMemStats(&after)

			if rec.Code != tt.want {
				t.Errorf("got %d %.200s, want %d", rec.Code, rec.Body, tt.want)
			}
			if body.n > tt.maxRead {
				t.Errorf("read %d bytes of the body, want at most %d", body.n, tt.maxRead)
			}
			if tt.want == http.StatusOK && !strings.Contains(rec.Body.String(), "dropped: undecodable") {
				t.Errorf("got %.300s, want Logs saying the event was dropped as undecodable", rec.Body)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > tt.maxAlloc {
				t.Errorf("one request allocated %d MiB, want at most %d MiB", got/mib, tt.maxAlloc/mib)
			}
		})
	}
	if rec := p.post("/api/rotate", []byte(`{"key":"`+p.vault.URL()+`/keys/cmk"}`)); rec.Code != http.StatusOK {
		t.Errorf("after the hostile bodies: got %d %s, want 200", rec.Code, rec.Body)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// repeatReader yields n copies of b.
type repeatReader struct {
	b byte
	n int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = r.b
	}
	r.n -= k
	return k, nil
}

// TestNoSecretsInLogs runs rotations, refusals and failures through the
// handler and checks that no bearer token the emulator issued, and no
// key material, appears in any log line.
func TestNoSecretsInLogs(t *testing.T) {
	p := newInproc(t, 2)
	v2, err := p.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	p.invoke(p.event(t, v2))
	remove := p.emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: http.StatusUnauthorized})
	v3, _ := p.vault.RotateKey("cmk")
	p.invoke(p.event(t, v3))
	remove()
	p.post("/api/rotate", []byte(`{"key":"`+p.vault.URL()+`/keys/cmk","dryRun":true}`))
	p.post("/api/rotate", []byte(`{"key":"https://nope.vault.azure.net/keys/x"}`))
	p.invoke([]byte(`{"id":"x","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","data":{"Id":42}}`))

	var secrets []string
	for _, r := range p.emu.Requests() {
		if r.Service == "identity" {
			continue
		}
		var body struct {
			Key struct{ N, E string } `json:"key"`
		}
		if json.Unmarshal(r.Body, &body) == nil && body.Key.N != "" {
			secrets = append(secrets, body.Key.N)
		}
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "server rotated") {
		t.Fatalf("got logs without a rotation, want the run to have rotated:\n%s", logs)
	}
	secrets = append(secrets, p.tokens(t)...)
	if len(secrets) == 0 {
		t.Fatal("got no token to look for, want the emulator's issued tokens")
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a log line contains a secret (%.12s…)", s)
		}
	}
	for _, word := range []string{"Bearer ", "access_token", "AccountKey=", "SharedAccessSignature", "sig="} {
		if strings.Contains(logs, word) {
			t.Errorf("logs contain %q", word)
		}
	}
}
