package handler_test

import (
	"net/http"
	"testing"
)

// BenchmarkKeyNewVersionCreated measures one Event Grid invocation
// through the handler against a zero-latency emulator with three
// servers: decoding the envelope and the event, reading the key and
// each server, deciding, and answering.
//
//   - rotate: each op is a new key version, so every server is read,
//     PATCHed and confirmed (3 PATCHes, 6 GETs, 2 key reads);
//   - redelivery: the same event again, every server already confirmed;
//   - current: a versionless event, every server read and found current.
func BenchmarkKeyNewVersionCreated(b *testing.B) {
	b.Run("rotate", func(b *testing.B) {
		p := newInproc(b, 3)
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			v, err := p.vault.RotateKey("cmk")
			if err != nil {
				b.Fatal(err)
			}
			ev := p.event(b, v)
			b.StartTimer()
			if got := p.invoke(ev); got != http.StatusOK {
				b.Fatalf("got %d, want 200", got)
			}
		}
	})
	b.Run("redelivery", func(b *testing.B) {
		p := newInproc(b, 3)
		ev := p.event(b, p.v1)
		p.invoke(ev)
		b.ReportAllocs()
		for b.Loop() {
			if got := p.invoke(ev); got != http.StatusOK {
				b.Fatalf("got %d, want 200", got)
			}
		}
	})
	b.Run("current", func(b *testing.B) {
		p := newInproc(b, 3)
		ev := []byte(`{"id":"1","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","subject":"cmk",` +
			`"eventTime":"2024-01-01T00:00:00Z","dataVersion":"1","data":{"Id":"` + p.vault.URL() + `/keys/cmk","VaultName":"kv","ObjectType":"Key","ObjectName":"cmk"}}`)
		b.ReportAllocs()
		for b.Loop() {
			if got := p.invoke(ev); got != http.StatusOK {
				b.Fatalf("got %d, want 200", got)
			}
		}
	})
}
