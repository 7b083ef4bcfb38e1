package rotation_test

import (
	"cmp"
	"flag"
	"fmt"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/rotation"
)

var fanOutLarge = flag.Bool("fanout.large", false, "also rotate 1,000 servers under throttling (scripts/bench)")

// callLatency is what every emulated Azure call costs in the fan-out runs.
const callLatency = 50 * time.Millisecond

// TestFanOutUnderThrottling rotates N servers of one key with Resource
// Manager's token buckets at ARM's sizes and 50 ms per call, redelivering
// at once until every server is done, as many invocations as it takes.
// It runs in a synctest bubble, so minutes of throttling cost seconds.
// It reports the simulated time against the bound the buckets set, and
// against one server at a time (what a sequential script does).
func TestFanOutUnderThrottling(t *testing.T) {
	sizes := []int{10, 100}
	if *fanOutLarge {
		sizes = append(sizes, 1000)
	}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			fan := fanOut(t, n, 0)
			seq := fanOut(t, n, 1)
			bound := throttleBound(fan)
			t.Logf("fanout: servers=%d concurrency=8 elapsed=%.1fs bound=%.1fs ratio_to_bound=%.2f invocations=%d "+
				"writes=%d reads=%d throttled=%d sequential_elapsed=%.1fs sequential_invocations=%d speedup=%.1f",
				n, fan.elapsed.Seconds(), bound.Seconds(), fan.elapsed.Seconds()/bound.Seconds(), fan.invocations,
				fan.writes, fan.reads, fan.throttled, seq.elapsed.Seconds(), seq.invocations,
				seq.elapsed.Seconds()/fan.elapsed.Seconds())
			if limit := bound + bound/10; fan.elapsed > limit {
				t.Errorf("got %v, want within 10%% of the bound %v", fan.elapsed, bound)
			}
		})
	}
}

// run is what one fan-out run did, in simulated time.
type run struct {
	servers                  int
	elapsed                  time.Duration
	invocations              int
	writes, reads, throttled int // Resource Manager requests, 429s among them
	perServerIO              time.Duration
}

// throttleBound is the least time any client could take: one write and
// two reads per server (read, confirm) beyond the buckets' bursts at
// their refill rates, or, when the buckets do not bind, a read, a write,
// the shortest wait before confirming and a read per batch of eight.
func throttleBound(r run) time.Duration {
	a := emulator.ARMDefaultThrottle
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	writes := sec(max(0, float64(r.servers)-a.WriteBurst) / a.WriteRefillPerSec)
	reads := sec(max(0, float64(2*r.servers)-a.ReadBurst) / a.ReadRefillPerSec)
	return max(writes, reads, r.perServerIO)
}

// fanOut rotates n servers from v1 to v2 with the given concurrency (zero:
// the default) and returns what it took.
func fanOut(t *testing.T, n, concurrency int) run {
	w := newWorld(t, n)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	w.emu.InjectFault(emulator.Fault{Latency: callLatency})
	w.emu.SetThrottle(&emulator.ARMDefaultThrottle)
	w.emu.ResetRequests()

	out := run{servers: n}
	synctest.Test(t, func(t *testing.T) {
		r := w.rotatorWith(t, func(c *rotation.Config) { c.Concurrency = concurrency })
		e := w.event(t, v2)
		start := time.Now()
		for out.invocations < 100 {
			out.invocations++
			rep := *r.HandleEvents(t.Context(), []rotation.Event{e})[0].Report
			if rep.OK() {
				break
			}
			if !rep.Final() {
				continue
			}
			t.Fatalf("invocation %d: got a final failure: %+v", out.invocations, rep)
		}
		out.elapsed = time.Since(start)
	})

	for _, id := range w.ids {
		if got, _ := w.emu.ServerKeyURL(id); got != v2.KID {
			t.Fatalf("%s: got %s, want %s", id, got, v2.KID)
		}
	}
	for _, r := range w.emu.Requests() {
		if r.Service != "arm" {
			continue
		}
		switch {
		case r.Method == http.MethodPatch:
			out.writes++
		default:
			out.reads++
		}
		if r.Status == http.StatusTooManyRequests {
			out.throttled++
		}
	}
	// Unthrottled, the token and the key's versions (current, the
	// event's, the servers' previous) cost a call each, and every server
	// a read, a write and a confirming read, eight at a time.
	workers := cmp.Or(concurrency, 8)
	out.perServerIO = time.Duration(4+3*((n+workers-1)/workers)) * callLatency
	return out
}

// TestRotate_RedeliveriesProgressUnderThrottling gives Resource Manager
// a read budget too small to read every server within one deadline. Each
// redelivery of the event must still make progress (it reads the servers
// it has not confirmed first), so that a few redeliveries finish the rotation
// instead of stalling at the same server every time.
func TestRotate_RedeliveriesProgressUnderThrottling(t *testing.T) {
	w := newWorld(t, 60)
	v2, err := w.vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	w.emu.SetThrottle(&emulator.Throttle{WriteBurst: 100, WriteRefillPerSec: 10, ReadBurst: 20, ReadRefillPerSec: 2})

	synctest.Test(t, func(t *testing.T) {
		r := w.rotatorWith(t, func(c *rotation.Config) { c.Deadline = 10 * time.Second })
		e := w.event(t, v2)
		for i := 1; ; i++ {
			rep := *r.HandleEvents(t.Context(), []rotation.Event{e})[0].Report
			if rep.OK() {
				break
			}
			if i == 10 {
				t.Fatalf("after %d deliveries: got %+v, want every server done", i, rep.Servers)
			}
			time.Sleep(10 * time.Second) // Event Grid's first redelivery delay
		}
	})
	for _, id := range w.ids {
		if got, _ := w.emu.ServerKeyURL(id); got != v2.KID {
			t.Errorf("%s: got %s, want %s", id, got, v2.KID)
		}
	}
}
