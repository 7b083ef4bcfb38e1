package emulator

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Fault changes how matching requests are answered. A request matches when
// Service, Method and PathSuffix all match; the first matching fault wins.
//
// A fault with StaleReads or ProvisioningState acts on writes instead,
// and its Status, Reset and Latency are ignored. With StaleReads, after
// each matching successful PATCH or PUT that changes a server's key URL,
// the next StaleReads GETs of that server show the URL it had before. With
// ProvisioningState, after each matching successful PATCH or PUT of a
// server, the server reports that provisioningState (in the write's
// answer, in lists and in GETs) for its next StateReads GETs, then
// Succeeded; with StateReads zero, until its next write.
type Fault struct {
	Service    string        // "arm", "keyvault", "identity"; "" any
	Method     string        // "" any
	PathSuffix string        // "" any; matched against the path's suffix, case-insensitive
	Status     int           // 0: no status fault
	Code       string        // error code in the body; zero: one fitting Status
	RetryAfter time.Duration // Retry-After header, whole seconds rounded up; zero: none
	Times      int           // 0: always
	Latency    time.Duration // wait before answering (or before the other faults act)
	Reset      bool          // close the connection without an answer
	StaleReads int           // after a PATCH of a matching server, the next N GETs show the old URL

	ProvisioningState string // after a write of a matching server: "Updating", "Failed", …
	StateReads        int    // how many GETs show ProvisioningState; 0: until the next write
}

// Values Fault.Service and Fault.Method match, besides "" (any); both are
// matched case-insensitively.
var (
	faultServices = []string{svcARM, svcKeyVault, svcIdentity}
	faultMethods  = []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPatch,
		http.MethodPost, http.MethodDelete}
)

// check refuses a Service or Method no request can match, and a Status
// no HTTP response can carry.
func (f *Fault) check() error {
	if f.Status != 0 && (f.Status < 100 || f.Status > 599) {
		return fmt.Errorf("%w: status %d is not an HTTP status (100-599), or 0 for none", ErrInvalid, f.Status)
	}
	for _, m := range []struct {
		name, value string
		valid       []string
	}{{"service", f.Service, faultServices}, {"method", f.Method, faultMethods}} {
		ok := m.value == "" || slices.ContainsFunc(m.valid, func(v string) bool {
			return strings.EqualFold(v, m.value)
		})
		if !ok {
			return fmt.Errorf("%w: %s %q is not one of %s (or empty for any)", ErrInvalid,
				m.name, m.value, strings.Join(m.valid, ", "))
		}
	}
	return nil
}

// onWrite reports whether f acts on writes rather than on requests.
func (f *Fault) onWrite() bool { return f.StaleReads > 0 || f.ProvisioningState != "" }

type faultEntry struct {
	id   int
	f    Fault
	used int
}

type staleRead struct {
	url  string
	left int
}

// pendingState is a provisioningState a write fault left on a server.
type pendingState struct {
	state string
	left  int // GETs still to show it; 0: until the next write
}

// InjectFault adds f after the faults already injected. Faults apply to
// requests after authentication (a fault never hides Key Vault's challenge
// or the identity header check). remove takes it away; it is idempotent.
// A Service other than "arm", "keyvault" and "identity", or a Method other
// than GET, HEAD, PUT, PATCH, POST and DELETE, matches no request (the
// control surface refuses such a fault).
func (e *Emulator) InjectFault(f Fault) (remove func()) {
	id := e.addFault(f)
	return func() { e.removeFault(id) }
}

func (e *Emulator) addFault(f Fault) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faultSeq++
	e.faults = append(e.faults, &faultEntry{id: e.faultSeq, f: f})
	return e.faultSeq
}

func (e *Emulator) removeFault(id int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(e.faults)
	e.faults = slices.DeleteFunc(e.faults, func(fe *faultEntry) bool { return fe.id == id })
	return len(e.faults) < n
}

// ClearFaults removes every fault and forgets pending stale reads and the
// provisioning states faults left (SetServerProvisioningState's stay).
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = nil
	clear(e.stale)
	clear(e.pending)
}

func (f *Fault) matches(service string, r *http.Request) bool {
	if f.Service != "" && !strings.EqualFold(f.Service, service) {
		return false
	}
	if f.Method != "" && !strings.EqualFold(f.Method, r.Method) {
		return false
	}
	if f.PathSuffix == "" {
		return true
	}
	suffix := strings.ToLower(f.PathSuffix)
	p := strings.ToLower(r.URL.Path)
	return strings.HasSuffix(p, suffix) || strings.HasSuffix(strings.TrimSuffix(p, "/"), suffix)
}

// take returns the first fault matching r for which use is true, and
// counts one use of it; a fault used Times times goes away. The caller
// holds the lock.
func (e *Emulator) take(service string, r *http.Request, use func(*Fault) bool) (Fault, bool) {
	for i, fe := range e.faults {
		if !use(&fe.f) || !fe.f.matches(service, r) {
			continue
		}
		fe.used++
		if fe.f.Times > 0 && fe.used >= fe.f.Times {
			e.faults = slices.Delete(e.faults, i, i+1)
		}
		return fe.f, true
	}
	return Fault{}, false
}

// applyFault acts on the first matching request fault; it reports whether
// the request has been answered (or dropped).
func (e *Emulator) applyFault(service string, w http.ResponseWriter, r *http.Request) bool {
	e.mu.Lock()
	f, ok := e.take(service, r, func(f *Fault) bool { return !f.onWrite() })
	e.mu.Unlock()
	if !ok {
		return false
	}
	if f.Latency > 0 && !sleepCtx(r.Context(), f.Latency) {
		return true // the client gave up
	}
	if f.Reset {
		// The server closes the connection without writing; InProcessTransport
		// turns this into ErrConnectionReset.
		panic(http.ErrAbortHandler)
	}
	if f.Status == 0 {
		return false
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.RetryAfter.Seconds()))))
	}
	code := f.Code
	if code == "" {
		code = defaultCode(service, f.Status)
	}
	msg := "Injected fault: " + http.StatusText(f.Status) + "."
	switch service {
	case svcARM:
		writeARMError(w, f.Status, code, msg)
	case svcKeyVault:
		writeKVError(w, f.Status, code, msg)
	default:
		writeIdentityError(w, f.Status, code+": "+msg)
	}
	return true
}

func defaultCode(service string, status int) string {
	switch {
	case status == http.StatusTooManyRequests && service == svcARM:
		return "SubscriptionRequestsThrottled"
	case status == http.StatusTooManyRequests:
		return "Throttled"
	case status == http.StatusNotFound && service == svcKeyVault:
		return "KeyNotFound"
	case status == http.StatusNotFound:
		return "ResourceNotFound"
	case status == http.StatusForbidden && service == svcARM:
		return "AuthorizationFailed"
	}
	return strings.ReplaceAll(http.StatusText(status), " ", "")
}

// noteWrite arms the first matching write fault after a successful write
// of server id; changed says whether the write changed its key URL, which
// was old. A fault of stale reads alone is not used by a write that left
// the URL as it was. The caller holds the lock.
func (e *Emulator) noteWrite(r *http.Request, id, old string, changed bool) {
	f, ok := e.take(svcARM, r, func(f *Fault) bool {
		return f.ProvisioningState != "" || f.StaleReads > 0 && changed
	})
	if !ok {
		return
	}
	if f.StaleReads > 0 && changed {
		e.stale[strings.ToLower(id)] = &staleRead{url: old, left: f.StaleReads}
	}
	if f.ProvisioningState != "" {
		e.pending[strings.ToLower(id)] = &pendingState{state: f.ProvisioningState, left: f.StateReads}
	}
}

// provisioningState returns the state server id reports; with read, one
// GET is counted against a fault's pending state. The caller holds the
// lock.
func (e *Emulator) provisioningState(s *server, read bool) string {
	p, ok := e.pending[strings.ToLower(s.res.ID)]
	if !ok {
		return s.res.Properties.ProvisioningState
	}
	if read && p.left > 0 {
		p.left--
		if p.left == 0 {
			delete(e.pending, strings.ToLower(s.res.ID))
		}
	}
	return p.state
}

// staleURL returns the URL a GET of id must show instead of the real one,
// counting one stale read. The caller holds the lock.
func (e *Emulator) staleURL(id string) (string, bool) {
	s, ok := e.stale[strings.ToLower(id)]
	if !ok {
		return "", false
	}
	s.left--
	if s.left <= 0 {
		delete(e.stale, strings.ToLower(id))
	}
	return s.url, true
}

// Throttle sizes Resource Manager's token buckets, one pair (reads and
// writes) per subscription.
type Throttle struct {
	WriteBurst, WriteRefillPerSec, ReadBurst, ReadRefillPerSec float64
}

// ARMDefaultThrottle is Resource Manager's default per-subscription limit:
// https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling
var ARMDefaultThrottle = Throttle{
	WriteBurst: 200, WriteRefillPerSec: 10, ReadBurst: 250, ReadRefillPerSec: 25,
}

type throttle struct {
	cfg     Throttle
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// SetThrottle turns Resource Manager's throttling on with fresh, full
// buckets, or off with nil. It is off after Start.
func (e *Emulator) SetThrottle(t *Throttle) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t == nil {
		e.throttle = nil
		return
	}
	e.throttle = &throttle{cfg: *t, buckets: map[string]*bucket{}}
}

// admit takes a token from the subscription's read or write bucket. It
// sets the x-ms-ratelimit-remaining-subscription-* header and reports
// whether the request may proceed; when it may not, it returns how long
// until a token is back. The clock is time.Now, so a testing/synctest
// bubble's fake clock drives it.
func (e *Emulator) admit(w http.ResponseWriter, sub string, write bool) (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.throttle
	if t == nil || sub == "" {
		return 0, true
	}
	kind, burst, rate := "reads", t.cfg.ReadBurst, t.cfg.ReadRefillPerSec
	if write {
		kind, burst, rate = "writes", t.cfg.WriteBurst, t.cfg.WriteRefillPerSec
	}
	k := strings.ToLower(sub) + "/" + kind
	now := time.Now()
	b, ok := t.buckets[k]
	if !ok {
		b = &bucket{tokens: burst, last: now}
		t.buckets[k] = b
	}
	if now.After(b.last) {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now

	h := "X-Ms-Ratelimit-Remaining-Subscription-" + strings.ToUpper(kind[:1]) + kind[1:]
	if b.tokens < 1 {
		w.Header().Set(h, "0")
		if rate <= 0 {
			return time.Hour, false
		}
		return time.Duration((1 - b.tokens) / rate * float64(time.Second)), false
	}
	b.tokens--
	w.Header().Set(h, strconv.Itoa(int(b.tokens)))
	return 0, true
}
