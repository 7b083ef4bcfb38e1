package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

var (
	seedsFlag = flag.Int("chaos.seeds", 0, "seeds to run; zero: $CHAOS_SEEDS, or 30")
	seedFlag  = flag.Int64("chaos.seed", -1, "run this seed only")
)

// defaultSeeds keeps the test well under a minute with -race on a small
// machine; scripts/bench runs many more.
const defaultSeeds = 30

func seeds(t *testing.T) []uint64 {
	if *seedFlag >= 0 {
		return []uint64{uint64(*seedFlag)}
	}
	n := *seedsFlag
	if n == 0 {
		if v, err := strconv.Atoi(os.Getenv("CHAOS_SEEDS")); err == nil && v > 0 {
			n = v
		}
	}
	if n == 0 {
		n = defaultSeeds
		if testing.Short() {
			n = 5
		}
	}
	var out []uint64
	for i := range n {
		out = append(out, uint64(i))
	}
	return out
}

// totals add up what every seed did, for the summary line.
type totals struct {
	seeds, invocations, redeliveries, patches, faults, checks int
}

// TestChaos runs each seed in its own synctest bubble: simulated minutes
// of events, faults and redeliveries cost milliseconds.
func TestChaos(t *testing.T) {
	var sum totals
	for _, seed := range seeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			s := newScenario(t, seed)
			synctest.Test(t, s.run)
			s.check(t)
			sum.seeds++
			sum.invocations += int(s.invocations.Load())
			sum.redeliveries += int(s.redeliveries.Load())
			sum.patches += s.patches
			sum.faults += len(s.faults)
			sum.checks += s.checks
		})
	}
	t.Logf("chaos: %d seeds, %d invocations (%d redeliveries), %d PATCHes, %d faults injected; "+
		"%d invariant checks passed: every subscribed server on its key's newest valid version, "+
		"never moved backwards, no PATCH to another vault or key, no PATCH for a server already current, "+
		"every rotated outcome confirmed by a GET, no call to an unsubscribed vault, every delivery answered 2xx, "+
		"no token in any log line",
		sum.seeds, sum.invocations, sum.redeliveries, sum.patches, sum.faults, sum.checks)
}

// key is one Key Vault key of the scenario and the versions it gets.
type key struct {
	vault    *emulator.Vault
	name     string
	mapped   bool
	versions []emulator.KeyVersionInfo // in creation order
	valid    []bool
}

func (k *key) ref() string { return k.vault.URL() + "/keys/" + k.name }

// ordinal returns the index of version v, or -1.
func (k *key) ordinal(v string) int {
	return slices.IndexFunc(k.versions, func(kv emulator.KeyVersionInfo) bool { return strings.EqualFold(kv.Version, v) })
}

// server is one Fluid Relay server and what the rotation may do to it.
type server struct {
	id      string
	initial string // key URL at the start
	key     *key   // the key whose version it uses
	rotates bool   // subscribed and pinned to a version of its mapped key
}

type scenario struct {
	seed    uint64
	rng     *rand.Rand
	emu     *emulator.Emulator
	keys    []*key // cmk and k2 (mapped), cmk-old and the other vault's cmk
	other   *emulator.Vault
	servers []*server
	targets rotation.Targets
	faults  []emulator.Fault

	// Filled by run.
	tap          *tap
	logs         *logRecorder
	invocations  atomic.Int64
	redeliveries atomic.Int64
	undelivered  []string // deliveries never answered 2xx

	// Filled by check.
	patches int
	checks  int
}

// newScenario builds the emulator's world for one seed, outside the bubble.
func newScenario(t *testing.T, seed uint64) *scenario {
	t.Helper()
	emu := testenv.Start(t)
	t.Setenv("IDENTITY_ENDPOINT", emu.IdentityEndpoint())
	t.Setenv("IDENTITY_HEADER", emu.IdentityHeader())

	s := &scenario{seed: seed, rng: rand.New(rand.NewPCG(seed, 0x636d6b)), emu: emu}
	kva, kvb := emu.AddVault("kva"), emu.AddVault("kvb")
	s.other = emu.AddVault("kvx")
	cmk := s.addKey(t, kva, "cmk", true)
	k2 := s.addKey(t, kvb, "k2", true)
	s.addKey(t, kva, "cmk-old", false)
	s.addKey(t, s.other, "cmk", false)

	// Pinned servers of both mapped keys; one following cmk versionless;
	// one mapped under cmk but using k2 (a mismatch); servers nobody
	// subscribed, on cmk and on the other vault's key.
	mapped := map[*key][]string{}
	add := func(name, url string, k *key, under *key, rotates bool) {
		id, err := emu.PutServer(emulator.ServerSpec{Name: name, KeyURL: url})
		if err != nil {
			t.Fatal(err)
		}
		s.servers = append(s.servers, &server{id: id, initial: url, key: k, rotates: rotates})
		if under != nil {
			mapped[under] = append(mapped[under], id)
		}
	}
	for i := range 2 + s.rng.IntN(3) {
		add(fmt.Sprintf("cmk-%d", i), cmk.versions[0].KID, cmk, cmk, true)
	}
	for i := range 1 + s.rng.IntN(3) {
		add(fmt.Sprintf("k2-%d", i), k2.versions[0].KID, k2, k2, true)
	}
	add("follow", cmk.ref(), cmk, cmk, false)
	add("mismatch", k2.versions[0].KID, k2, cmk, false)
	add("stray", cmk.versions[0].KID, cmk, nil, false)
	add("other", s.keys[3].versions[0].KID, s.keys[3], nil, false)

	var doc struct {
		Targets []map[string]any `json:"targets"`
	}
	for _, k := range []*key{cmk, k2} {
		doc.Targets = append(doc.Targets, map[string]any{"key": k.ref(), "servers": mapped[k]})
	}
	b, _ := json.Marshal(doc)
	var err error
	if s.targets, err = rotation.ParseTargets(b); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *scenario) addKey(t *testing.T, v *emulator.Vault, name string, mapped bool) *key {
	t.Helper()
	kv, err := v.CreateKey(name, emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k := &key{vault: v, name: name, mapped: mapped, versions: []emulator.KeyVersionInfo{kv}, valid: []bool{true}}
	s.keys = append(s.keys, k)
	return k
}

// Timeline, in simulated time.
const (
	createWithin = 40 * time.Second  // new versions appear in this window
	clearAt      = 70 * time.Second  // faults and throttling end
	maxAttempts  = 12                // deliveries of one event before giving up
	staleDelay   = 90 * time.Second  // at most this late for a stale copy
	copiesMax    = 3                 // deliveries of one event (duplicates)
	reconcileMax = 2                 // timer invocations
	latencyMax   = 3 * time.Second   // injected latency
	longRetry    = 120 * time.Second // a Retry-After past any deadline
)

// Event Grid's redelivery schedule (its first steps).
var redelivery = []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute}

// run plays the seed inside the bubble: faults, key versions and their
// events delivered concurrently with duplicates, reordering and stale
// copies, timer invocations, and Event Grid's redelivery of every
// invocation that did not answer 2xx.
func (s *scenario) run(t *testing.T) {
	s.tap = newTap(s.emu)
	s.logs = newLogRecorder(t, s.tap.seq)
	h := s.newHandler(t)

	s.injectFaults()
	var wg sync.WaitGroup
	var mu sync.Mutex
	deliver := func(at time.Duration, fn string, body []byte) {
		wg.Go(func() {
			time.Sleep(at)
			if !s.deliver(h, fn, body) {
				mu.Lock()
				s.undelivered = append(s.undelivered, fmt.Sprintf("%s %s", fn, body))
				mu.Unlock()
			}
		})
	}
	for range s.rng.IntN(reconcileMax + 1) {
		deliver(s.randDur(clearAt), "Reconcile", []byte(`{"Data":{"timer":{"IsPastDue":false}},"Metadata":{}}`))
	}

	// The driver creates versions in time order and schedules their events.
	type creation struct {
		at time.Duration
		k  *key
	}
	var plan []creation
	for _, k := range s.keys {
		for range 1 + s.rng.IntN(3) {
			plan = append(plan, creation{s.randDur(createWithin), k})
		}
	}
	slices.SortFunc(plan, func(a, b creation) int { return int(a.at - b.at) })
	last := map[*key]int{}
	for i, c := range plan {
		last[c.k] = i
	}

	start := time.Now()
	wg.Go(func() {
		time.Sleep(clearAt)
		s.emu.ClearFaults()
		s.emu.SetThrottle(nil)
	})
	for i, c := range plan {
		time.Sleep(c.at - time.Since(start))
		kv, valid := s.newVersion(t, c.k, last[c.k] == i)
		c.k.versions, c.k.valid = append(c.k.versions, kv), append(c.k.valid, valid)

		for range 1 + s.rng.IntN(copiesMax) {
			delay := s.randDur(20 * time.Second)
			if s.rng.IntN(4) == 0 {
				delay = s.randDur(staleDelay)
			}
			deliver(delay, "KeyNewVersionCreated", s.envelope(rotation.TypeKeyNewVersionCreated, kv, c.k))
		}
		if s.rng.IntN(4) == 0 {
			deliver(s.randDur(20*time.Second), "KeyNewVersionCreated", s.envelope(rotation.TypeKeyNearExpiry, kv, c.k))
		}
	}
	wg.Wait()
}

func (s *scenario) randDur(max time.Duration) time.Duration {
	return time.Duration(s.rng.Int64N(int64(max)))
}

// newVersion creates a version of k: valid when it must be (the last one
// of a key, so that the newest valid version is its current one), or else
// at random disabled, EC, or without unwrapKey.
func (s *scenario) newVersion(t *testing.T, k *key, mustBeValid bool) (emulator.KeyVersionInfo, bool) {
	var o emulator.KeyOptions
	valid := mustBeValid || s.rng.IntN(3) > 0
	if !valid {
		switch s.rng.IntN(3) {
		case 0:
			o.Disabled = true
		case 1:
			o.Type = "EC"
		case 2:
			o.Ops = []string{"encrypt", "decrypt", "wrapKey"}
		}
	}
	kv, err := k.vault.CreateKey(k.name, o)
	if err != nil {
		t.Fatal(err)
	}
	return kv, valid
}

// envelope is the host's invocation for an event about v, in a random
// schema, as an object or a JSON-encoded string.
func (s *scenario) envelope(typ string, v emulator.KeyVersionInfo, k *key) []byte {
	var ev any = s.emu.KeyEvent(typ, v, k.vault.Name())
	if s.rng.IntN(2) == 0 {
		ev = s.emu.KeyCloudEvent(typ, v, k.vault.Name())
	}
	b, _ := json.Marshal(ev)
	var data any = json.RawMessage(b)
	if s.rng.IntN(3) == 0 {
		data = string(b)
	}
	env, _ := json.Marshal(map[string]any{
		"Data":     map[string]any{"event": data},
		"Metadata": map[string]any{"sys": map[string]any{"MethodName": "KeyNewVersionCreated"}},
	})
	return env
}

// deliver invokes fn until it answers 2xx, waiting between attempts as
// Event Grid does. It reports whether some attempt succeeded.
func (s *scenario) deliver(h http.Handler, fn string, body []byte) bool {
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		n := s.invocations.Add(1)
		if attempt > 1 {
			s.redeliveries.Add(1)
		}
		req := httptest.NewRequest(http.MethodPost, "/"+fn, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Azure-Functions-InvocationId", fmt.Sprintf("inv-%d", n))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code/100 == 2 {
			return true
		}
		time.Sleep(redelivery[min(attempt-1, len(redelivery)-1)])
	}
	return false
}

// injectFaults chooses two to six faults from the matrix, and sometimes
// Resource Manager's throttling with small buckets.
func (s *scenario) injectFaults() {
	times := func() int { return 1 + s.rng.IntN(4) }
	menu := []func() emulator.Fault{
		func() emulator.Fault {
			return emulator.Fault{Service: "arm", Status: http.StatusTooManyRequests, Times: times(),
				RetryAfter: time.Duration(1+s.rng.IntN(3)) * time.Second}
		},
		func() emulator.Fault {
			srv := s.servers[s.rng.IntN(len(s.servers))]
			return emulator.Fault{Service: "arm", Method: http.MethodPatch, PathSuffix: srv.id[strings.LastIndex(srv.id, "/"):],
				Status: http.StatusTooManyRequests, RetryAfter: longRetry}
		},
		func() emulator.Fault {
			return emulator.Fault{Service: "arm", Method: http.MethodPatch, Status: http.StatusConflict,
				Code: "AnotherOperationInProgress", Times: times()}
		},
		func() emulator.Fault {
			return emulator.Fault{Service: "arm", Status: []int{500, 503}[s.rng.IntN(2)], Times: times()}
		},
		func() emulator.Fault {
			return emulator.Fault{Service: []string{"arm", "keyvault"}[s.rng.IntN(2)], Reset: true, Times: times()}
		},
		func() emulator.Fault {
			return emulator.Fault{Service: "arm", Method: http.MethodPatch, StaleReads: 1 + s.rng.IntN(3)}
		},
		func() emulator.Fault {
			return emulator.Fault{Service: "identity", Status: []int{500, 503}[s.rng.IntN(2)], Times: times()}
		},
		func() emulator.Fault {
			return emulator.Fault{Service: "keyvault", Status: http.StatusForbidden, Code: "Forbidden", Times: times()}
		},
		func() emulator.Fault {
			return emulator.Fault{Service: []string{"arm", "keyvault"}[s.rng.IntN(2)], Times: 5 + times(),
				Latency: time.Duration(1 + s.rng.Int64N(int64(latencyMax)))}
		},
	}
	for range 2 + s.rng.IntN(5) {
		f := menu[s.rng.IntN(len(menu))]()
		s.faults = append(s.faults, f)
		s.emu.InjectFault(f)
	}
	if s.rng.IntN(3) == 0 {
		s.emu.SetThrottle(&emulator.Throttle{WriteBurst: 3, WriteRefillPerSec: 0.5, ReadBurst: 10, ReadRefillPerSec: 2})
	}
}

func (s *scenario) staleReads() bool {
	return slices.ContainsFunc(s.faults, func(f emulator.Fault) bool { return f.StaleReads > 0 })
}

// newHandler builds the product as the binary does, over the tap.
func (s *scenario) newHandler(t *testing.T) http.Handler {
	t.Helper()
	_, keys, relays := testenv.Adapters(t, s.emu, azcore.ClientOptions{Transport: s.tap})
	log := slog.New(handler.LogHandler(s.logs))
	rot, err := rotation.New(rotation.Config{
		Keys:        keys,
		Servers:     relays,
		Targets:     s.targets,
		Concurrency: 1 + s.rng.IntN(8),
		Logger:      log,
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := handler.New(handler.Config{Rotator: rot, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// tap records, in one sequence with the log, every Resource Manager
// answer as the product saw it, and every token it carried or received.
type tap struct {
	next policy.Transporter
	arm  string // Resource Manager's host
	seq  *atomic.Int64

	mu     sync.Mutex
	calls  []call
	tokens map[string]bool
}

// call is one Resource Manager exchange as the product saw it.
type call struct {
	seq          int64
	method, path string // path lower-cased
	status       int    // 0: no answer
	url, state   string // the answer's key URL and provisioningState
}

func newTap(emu *emulator.Emulator) *tap {
	return &tap{next: emu.InProcessTransport().(policy.Transporter), arm: strings.TrimPrefix(emu.ARMEndpoint(), "https://"),
		seq: new(atomic.Int64), tokens: map[string]bool{}}
}

func (t *tap) Do(req *http.Request) (*http.Response, error) {
	if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
		t.token(tok)
	}
	resp, err := t.next.Do(req)
	if err != nil || resp == nil {
		t.record(req, 0, nil)
		return resp, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(body, &tok) == nil && tok.AccessToken != "" {
		t.token(tok.AccessToken)
	}
	t.record(req, resp.StatusCode, body)
	return resp, nil
}

func (t *tap) token(tok string) {
	t.mu.Lock()
	t.tokens[tok] = true
	t.mu.Unlock()
}

func (t *tap) record(req *http.Request, status int, body []byte) {
	if !strings.EqualFold(req.URL.Host, t.arm) {
		return
	}
	c := call{method: req.Method, path: strings.ToLower(req.URL.Path), status: status}
	var res struct {
		Properties struct {
			ProvisioningState string `json:"provisioningState"`
			Encryption        struct {
				CustomerManagedKeyEncryption struct {
					KeyEncryptionKeyURL string `json:"keyEncryptionKeyUrl"`
				} `json:"customerManagedKeyEncryption"`
			} `json:"encryption"`
		} `json:"properties"`
	}
	if status == http.StatusOK && json.Unmarshal(body, &res) == nil {
		c.url = res.Properties.Encryption.CustomerManagedKeyEncryption.KeyEncryptionKeyURL
		c.state = res.Properties.ProvisioningState
	}
	t.mu.Lock()
	c.seq = t.seq.Add(1)
	t.calls = append(t.calls, c)
	t.mu.Unlock()
}

// logRecorder keeps every log line as JSON and, in the tap's sequence,
// every "server rotated" line. logcheck scans the lines when the seed's
// bubble ends.
type logRecorder struct {
	next  slog.Handler
	attrs []slog.Attr
	state *logState
}

type logState struct {
	seq     *atomic.Int64
	mu      sync.Mutex
	buf     bytes.Buffer
	rotated []rotatedLine
}

type rotatedLine struct {
	seq             int64
	server, version string
}

func newLogRecorder(t *testing.T, seq *atomic.Int64) *logRecorder {
	st := &logState{seq: seq}
	w := logcheck.Writer(t, lockedWriter{st})
	return &logRecorder{next: slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}), state: st}
}

type lockedWriter struct{ st *logState }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	return w.st.buf.Write(p)
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "server rotated" {
		line := rotatedLine{seq: l.state.seq.Add(1)}
		attrs := slices.Clone(l.attrs)
		r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
		for _, a := range attrs {
			switch a.Key {
			case "server_id":
				line.server = strings.ToLower(a.Value.String())
			case "key_version":
				line.version = a.Value.String()
			}
		}
		l.state.mu.Lock()
		l.state.rotated = append(l.state.rotated, line)
		l.state.mu.Unlock()
	}
	return l.next.Handle(ctx, r)
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{next: l.next.WithAttrs(as), attrs: append(slices.Clone(l.attrs), as...), state: l.state}
}

func (l *logRecorder) WithGroup(name string) slog.Handler {
	return &logRecorder{next: l.next.WithGroup(name), attrs: l.attrs, state: l.state}
}
