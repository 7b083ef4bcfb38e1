package rotation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config's zero values.
const (
	defaultConcurrency = 8
	// Event Grid waits 30 s for an answer; 25 s leaves room to write the
	// report and answer before it gives up and redelivers.
	defaultDeadline = 25 * time.Second
)

// Confirmation after a PATCH. Fluid Relay's PATCH is synchronous, but a
// read served by another Resource Manager replica may lag the write for a
// few seconds. Six reads with doubling, jittered waits (0.5 s to 4 s, about
// 11 s in all) cover that lag and still fit inside the default deadline.
const (
	confirmReads      = 6
	confirmFirstDelay = 500 * time.Millisecond
	confirmMaxDelay   = 4 * time.Second
)

// Config configures a Rotator.
type Config struct {
	Keys    Keys    // required
	Servers Servers // required
	Targets Targets // the subscription map; zero maps nothing

	Concurrency int           // servers handled at once; zero: 8
	Deadline    time.Duration // time budget of one call; zero: 25 s
	DryRun      bool          // decide and report, write nothing
	Logger      *slog.Logger  // nil: discard

	// Locker serialises the rotations of a key across processes (the
	// Function App's instances); nil: within this process only.
	Locker Locker
}

// Rotator brings the servers of subscribed keys to the newest valid key
// version and proves each change. It is safe for concurrent use. In one
// process, rotations of one key never overlap: a request that arrives
// while the key is being rotated waits, and then runs or joins one
// follow-up rotation, so that a version created mid-rotation is never lost
// and no two rotations of a key write to its servers at once. With a
// Locker, the same holds across processes.
type Rotator struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	keys map[string]*keyQueue // by KeyRef.ID

	confirmed confirmations
}

// New returns a Rotator for cfg, with defaults resolved.
func New(cfg Config) (*Rotator, error) {
	if cfg.Keys == nil || cfg.Servers == nil {
		return nil, errors.New("new rotator: Keys and Servers are required")
	}
	if cfg.Concurrency < 0 || cfg.Deadline < 0 {
		return nil, errors.New("new rotator: negative concurrency or deadline")
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = defaultConcurrency
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = defaultDeadline
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Rotator{cfg: cfg, log: cfg.Logger, keys: make(map[string]*keyQueue)}, nil
}

// Request asks for one key's servers to be rotated.
type Request struct {
	// Key names the key. Versionless: rotate to the current version.
	// Versioned: an event's version (the target is the later of it and
	// the current version) or, when Manual, exactly this version.
	Key        KeyRef
	DryRun     bool // decide and report, write nothing (besides Config.DryRun)
	AllowOlder bool // with Manual only: a server may move to an older version
	Manual     bool // a person asked (HTTP or command line), not an event

	// also holds the versions of other events merged into this request;
	// the target is the newest valid one of them, Key's and the current.
	also []string
}

// versions returns the distinct versions the request names.
func (req Request) versions() []string {
	var vs []string
	for _, v := range append([]string{req.Key.Version}, req.also...) {
		if v != "" && !slices.ContainsFunc(vs, func(w string) bool { return strings.EqualFold(v, w) }) {
			vs = append(vs, v)
		}
	}
	return vs
}

// merge folds the versions o names into req.
func (req *Request) merge(o Request) {
	req.also = append(slices.Clone(req.also), o.versions()...) // never into a slice another request shares
}

// Rotate rotates the servers subscribed to req.Key within Config.Deadline
// (or ctx's earlier deadline). A key that is not subscribed is refused
// without any call to Azure.
//
// Rotations of one key run one after another (see flight.go): identical
// requests share a run and its report, a request that arrives while the
// key is being rotated waits for that run to end, and time spent waiting
// counts against ctx.
func (r *Rotator) Rotate(ctx context.Context, req Request) Report {
	target, ok := r.cfg.Targets.Lookup(req.Key)
	if !ok {
		r.log.InfoContext(ctx, "key not subscribed", "key_name", req.Key.Name, "vault", req.Key.Vault)
		return Report{Key: req.Key.Versionless().String(), Error: "key not subscribed",
			ErrorKind: KindNotSubscribed, Servers: []ServerResult{}}
	}
	if !req.Manual {
		req.AllowOlder = false
	}
	req.DryRun = req.DryRun || r.cfg.DryRun

	f := r.enqueue(target.Key.ID(), req)
	return r.await(ctx, target, f)
}

func (rep Report) clone() Report {
	rep.Notes = slices.Clone(rep.Notes)
	rep.Servers = append([]ServerResult(nil), rep.Servers...)
	if rep.Servers == nil {
		rep.Servers = []ServerResult{}
	}
	return rep
}

// plan is one rotation's resolved target and its shared caches.
type plan struct {
	key        KeyRef // versionless
	target     KeyVersion
	current    string // the key's current version
	allowOlder bool
	dryRun     bool
	trust      bool // an event's rotation: a recent confirmation may stand in for a read it has no budget for
	now        time.Time
	notes      []string // for Report.Notes

	prev      versionCache
	throttled atomic.Pointer[RetryAfterError] // set once Resource Manager asks to wait past the deadline
}

func (r *Rotator) rotate(ctx context.Context, t Target, req Request) Report {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Deadline)
	defer cancel()
	start := time.Now()

	rep := Report{Key: t.Key.String(), DryRun: req.DryRun, Servers: []ServerResult{}}
	if r.cfg.Locker != nil && !req.DryRun {
		// Resolve under the lock too: the holder before us may have
		// written a newer version than the one we would resolve now.
		unlock, err := r.cfg.Locker.Lock(ctx, t.Key.ID())
		if err != nil {
			rep.Error, rep.ErrorKind, rep.Retryable = "lock key: "+err.Error(), KindBusy, true
			r.log.WarnContext(ctx, "rotation postponed: the key is locked or the lock unreachable",
				"key_name", t.Key.Name, "err", err)
			return rep
		}
		defer unlock()
	}
	p, err := r.resolve(ctx, t.Key, req)
	if err != nil {
		rep.Error, rep.ErrorKind, rep.Retryable = err.Error(), errorKind(err), retryable(err)
		if ra, ok := errors.AsType[*RetryAfterError](err); ok {
			rep.RetryAfter = ra.After
		}
		// Error for a final refusal; Warn when a redelivery will try again.
		level := slog.LevelError
		if rep.Retryable {
			level = slog.LevelWarn
		}
		r.log.Log(ctx, level, "rotation refused", "key_name", t.Key.Name, "key_version", req.Key.Version,
			"retryable", rep.Retryable, "err", err)
		return rep
	}
	rep.TargetVersion, rep.Notes = p.target.Ref.Version, p.notes

	rep.Servers = fanOut(ctx, r.cfg.Concurrency, t.Servers, r.schedule(p, t.Servers),
		func(ctx context.Context, id string) ServerResult { return r.server(ctx, p, id) },
		func(id string) ServerResult { return r.unreached(p, id, "not reached before the deadline") })
	if ra := p.throttled.Load(); ra != nil {
		rep.RetryAfter = ra.After
	}
	rep.Retryable = rep.finishable()
	r.log.InfoContext(ctx, "rotation done", "key_name", t.Key.Name, "key_version", p.target.Ref.Version,
		"servers", len(rep.Servers), "ok", rep.OK(), "elapsed", time.Since(start))
	return rep
}

// resolve reads the key and chooses the target version: exactly the
// requested version for a manual request, otherwise the newest (by
// creation) of the current version and the events' versions. An invalid
// target is an error.
func (r *Rotator) resolve(ctx context.Context, key KeyRef, req Request) (*plan, error) {
	key = key.Versionless()
	cur, err := r.version(ctx, key, key)
	if err != nil {
		return nil, fmt.Errorf("read current version: %w", err)
	}
	p := &plan{key: key, target: cur, current: cur.Ref.Version, allowOlder: req.AllowOlder,
		dryRun: req.DryRun, trust: !req.Manual && req.Key.Version != "", now: time.Now()}

	var missing []string
	for _, v := range req.versions() {
		if strings.EqualFold(v, cur.Ref.Version) {
			continue
		}
		ev, err := r.version(ctx, key, key.WithVersion(v))
		switch {
		case err == nil && (req.Manual || Newer(ev, p.target, cur.Ref.Version)):
			p.target = ev
		case err != nil && errors.As(err, new(targetError)) && req.Manual:
			return nil, fmt.Errorf("refuse target %s: %w", v, err)
		case err != nil && (req.Manual || retryable(err)):
			return nil, fmt.Errorf("read version %s: %w", v, err)
		case errors.Is(err, ErrNotFound):
			// An event is a trigger: the current version still stands.
			missing = append(missing, v)
		}
	}
	if err := CheckTarget(p.target, p.now); err != nil {
		return nil, fmt.Errorf("refuse target of %s: %w", key, targetError{err})
	}
	for _, v := range missing {
		note := "the event's version " + v + " was not found in Key Vault; the target is "
		if strings.EqualFold(p.target.Ref.Version, cur.Ref.Version) {
			note += "the current version " + cur.Ref.Version
		} else {
			note += p.target.Ref.Version + ", the newest of the current and the events' versions"
		}
		p.notes = append(p.notes, note)
		r.log.WarnContext(ctx, "event's key version not found in Key Vault; rotating to the target instead",
			"key_name", key.Name, "key_version", v, "current_version", cur.Ref.Version,
			"target_version", p.target.Ref.Version)
	}
	return p, nil
}

// version reads ref, a version of key (the current one when ref has no
// version), and names it by the map's spelling of key: whatever Key Vault
// answers, a PATCH can only ever write a version of the key the map
// names. A disabled version is an invalid target.
func (r *Rotator) version(ctx context.Context, key, ref KeyRef) (KeyVersion, error) {
	v, err := r.cfg.Keys.Key(ctx, ref)
	switch {
	case errors.Is(err, ErrDisabled):
		// Key Vault's 403 here is about the version, not about access.
		return KeyVersion{}, targetError{fmt.Errorf("%w in Key Vault (it answers 403 KeyDisabled)", ErrDisabled)}
	case err != nil:
		return KeyVersion{}, err
	case !v.Ref.SameKey(key) || v.Ref.Version == "" || ref.Version != "" && !strings.EqualFold(v.Ref.Version, ref.Version):
		return KeyVersion{}, fmt.Errorf("key vault described %s when asked for %s", v.Ref, ref)
	}
	v.Ref = key.WithVersion(v.Ref.Version)
	return v, nil
}

// fanOut runs fn for every server with at most limit at once, starting
// them in the given order of indexes into ids (nil: as listed). A server
// not started before ctx ends gets missed(id) instead. Results are in the
// order of ids.
func fanOut[T any](ctx context.Context, limit int, ids []string, order []int,
	fn func(context.Context, string) T, missed func(string) T) []T {
	results := make([]T, len(ids))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(limit, len(ids)) {
		wg.Go(func() {
			for i := range jobs {
				if ctx.Err() != nil {
					results[i] = missed(ids[i])
					continue
				}
				results[i] = fn(ctx, ids[i])
			}
		})
	}
	for k := range ids {
		if order != nil {
			k = order[k]
		}
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	return results
}

// schedule orders the servers of a rotation: those this process has not
// confirmed on the target recently come first, so that under Resource
// Manager's read throttling every redelivery of an event makes progress
// instead of spending its budget on servers already done; the confirmed
// ones follow and are read again when time allows.
func (r *Rotator) schedule(p *plan, ids []string) []int {
	first := make([]int, 0, len(ids))
	var last []int
	for i, id := range ids {
		if r.trusted(p, id) {
			last = append(last, i)
		} else {
			first = append(first, i)
		}
	}
	return append(first, last...)
}

// trusted reports whether a redelivered event may count id as current
// without reading it: this process confirmed it on the target within
// confirmedFor.
func (r *Rotator) trusted(p *plan, id string) bool {
	return p.trust && r.confirmed.recent(id, p.target.Ref.Version, p.now)
}

// unreached is the result for a server the rotation had no time or read
// budget left for: current when this process confirmed it on the target
// recently, otherwise failed and retryable.
func (r *Rotator) unreached(p *plan, id, reason string) ServerResult {
	if r.trusted(p, id) {
		v := p.target.Ref.Version
		return ServerResult{ID: id, Outcome: Current, Reason: ReasonConfirmed, PreviousVersion: v, Version: v}
	}
	return ServerResult{ID: id, Outcome: Failed, Retryable: true, Reason: reason}
}

// server reads, decides, and if needed patches and confirms one server.
// A panic is reported as that server's failure, so that one bad server
// never takes the others (or the process) down with it.
func (r *Rotator) server(ctx context.Context, p *plan, id string) (res ServerResult) {
	log := p.serverLog(r.log, id)
	defer func() {
		if v := recover(); v != nil {
			log.ErrorContext(ctx, "server not rotated: internal error",
				"err", fmt.Sprint(v), "stack", string(debug.Stack()))
			res = ServerResult{ID: id, Outcome: Failed, Reason: fmt.Sprintf("internal error: %v", v)}
		}
	}()
	res = r.serverOnce(ctx, log, p, id)
	if !p.dryRun && (res.Outcome == Rotated || res.Outcome == Current) {
		r.confirmed.remember(id, p.target.Ref.Version, time.Now())
	}
	return res
}

// serverLog is the logger for every line about server id: each carries
// the server, the key and the target version.
func (p *plan) serverLog(log *slog.Logger, id string) *slog.Logger {
	return log.With("server_id", id, "key_name", p.key.Name, "key_version", p.target.Ref.Version)
}

func (r *Rotator) serverOnce(ctx context.Context, log *slog.Logger, p *plan, id string) ServerResult {
	if ra := p.throttled.Load(); ra != nil {
		return r.unreached(p, id, "not attempted: Resource Manager asked to wait "+ra.After.String())
	}

	readCtx := ctx
	if r.trusted(p, id) {
		// Worth a look if Resource Manager has budget, not worth a wait.
		readCtx = NoWait(ctx)
	}
	srv, err := r.cfg.Servers.Get(readCtx, id)
	if err != nil {
		return r.failed(ctx, log, p, id, "", "read server", err)
	}
	if !sameVersion(srv.KeyURL, p.target.Ref) {
		r.confirmed.forget(id) // moved since: an old confirmation no longer speaks for it
	}
	in := Input{Key: p.key, Target: p.target, Current: p.current, Server: srv,
		AllowOlder: p.allowOlder, Now: p.now}
	if v, ok := p.needsPrevious(srv); ok {
		if in.Previous, err = p.prev.get(ctx, r.cfg.Keys, p.key.WithVersion(v)); err != nil {
			return r.failed(ctx, log, p, id, v, "read previous version "+v, err)
		}
	}

	d := Decide(in)
	res := ServerResult{ID: id, Outcome: d.Outcome, Reason: d.Reason,
		PreviousVersion: d.PreviousVersion, Version: d.PreviousVersion, Retryable: d.Retryable}
	switch {
	case d.Action == Leave && d.Outcome == Failed:
		log.ErrorContext(ctx, "server cannot be rotated", "previous_version", d.PreviousVersion,
			"reason", d.Reason, "retryable", d.Retryable)
		return res
	case d.Action == Leave:
		level := slog.LevelInfo
		if d.Reason == ReasonNoCMK || strings.HasPrefix(d.Reason, ReasonMismatch) {
			level = slog.LevelWarn // the map and the server disagree: a person must settle it
		}
		log.Log(ctx, level, "server left alone", "outcome", d.Outcome, "previous_version", d.PreviousVersion, "reason", d.Reason)
		return res
	case p.dryRun:
		log.InfoContext(ctx, "dry run: would rotate", "previous_version", d.PreviousVersion)
		res.Outcome, res.WouldPatch = Skipped, true
		res.Reason, res.Version = "dry run: would "+d.Reason, p.target.Ref.Version
		return res
	}

	url := p.target.Ref.String()
	if _, err := r.cfg.Servers.SetKeyURL(ctx, id, url); err != nil {
		return r.failed(ctx, log, p, id, d.PreviousVersion, "update key URL", err)
	}
	if err := r.confirm(ctx, id, p.target.Ref); err != nil {
		return r.failed(ctx, log, p, id, d.PreviousVersion, "confirm update", err)
	}
	log.InfoContext(ctx, "server rotated", "previous_version", d.PreviousVersion)
	res.Version = p.target.Ref.Version
	return res
}

// needsPrevious returns the server's version of the plan's key, when the
// decision needs that version's metadata.
func (p *plan) needsPrevious(s Server) (string, bool) {
	ref, err := ParseKeyURL(s.KeyURL)
	if err != nil || !ref.SameKey(p.key) || ref.Version == "" || strings.EqualFold(ref.Version, p.target.Ref.Version) {
		return "", false
	}
	return ref.Version, true
}

func (r *Rotator) failed(ctx context.Context, log *slog.Logger, p *plan, id, prev, op string, err error) ServerResult {
	if r.trusted(p, id) && (errors.Is(err, ErrThrottled) || errors.Is(err, context.DeadlineExceeded)) {
		// Throttled, or out of time, on a server this process confirmed
		// recently and has not seen elsewhere since.
		return r.unreached(p, id, op+": "+err.Error())
	}
	if ra, ok := errors.AsType[*RetryAfterError](err); ok {
		p.throttled.CompareAndSwap(nil, ra)
	}
	res := ServerResult{ID: id, Outcome: Failed, PreviousVersion: prev, Version: prev,
		Reason: op + ": " + err.Error(), Retryable: retryable(err)}
	if errors.Is(err, ErrNotFound) && op == "read server" {
		res.Reason = "server not found"
	}
	log.ErrorContext(ctx, "server not rotated", "previous_version", prev, "retryable", res.Retryable, "err", err)
	return res
}

// confirm reads the server until it reports ref and provisioningState
// Succeeded, at most confirmReads times.
func (r *Rotator) confirm(ctx context.Context, id string, ref KeyRef) error {
	delay := confirmFirstDelay
	for read := 1; ; read++ {
		s, err := r.cfg.Servers.Get(ctx, id)
		if err == nil && sameVersion(s.KeyURL, ref) && strings.EqualFold(s.ProvisioningState, "Succeeded") {
			return nil
		}
		switch {
		case err != nil && (errors.Is(err, ErrNotFound) || !retryable(err)):
			return err
		case err == nil && sameVersion(s.KeyURL, ref) && provisioningFailed(s.ProvisioningState):
			// Final, as Decide says of a server found in this state.
			return fmt.Errorf("%s: provisioningState %s", ReasonProvisionFailed, s.ProvisioningState)
		case read == confirmReads && err != nil:
			return fmt.Errorf("not confirmed after %d reads: %w", read, err)
		case read == confirmReads:
			return fmt.Errorf("not confirmed after %d reads: server reports %q, provisioningState %q: %w",
				read, s.KeyURL, s.ProvisioningState, ErrRetryable)
		}

		// Full jitter between half and all of the delay, so that servers
		// patched together do not read together.
		wait := delay/2 + rand.N(delay/2+1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("not confirmed before the deadline: %w", ctx.Err())
		}
		delay = min(2*delay, confirmMaxDelay)
	}
}

// provisioningFailed reports whether a provisioningState is a terminal
// failure: Resource Manager will not finish the update by itself.
func provisioningFailed(state string) bool {
	return strings.EqualFold(state, "Failed") || strings.EqualFold(state, "Canceled")
}

func sameVersion(url string, want KeyRef) bool {
	ref, err := ParseKeyURL(url)
	return err == nil && ref.SameKey(want) && strings.EqualFold(ref.Version, want.Version)
}

// targetError marks a target version that cannot protect a server.
type targetError struct{ err error }

func (e targetError) Error() string { return e.err.Error() }
func (e targetError) Unwrap() error { return e.err }

// errorKind classifies a key-level error for the report.
func errorKind(err error) ErrorKind {
	switch {
	case errors.As(err, new(targetError)):
		return KindInvalidTarget
	case errors.Is(err, ErrNotFound):
		return KindNotFound
	}
	return KindUpstream
}

// retryable reports whether a redelivery could succeed without a person.
func retryable(err error) bool {
	return errors.Is(err, ErrRetryable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// confirmations remembers, per server, the last version this process
// saw it on (after confirming a PATCH, or reading it already there).
//
// Event Grid redelivers a whole event when some servers are unfinished.
// Under Resource Manager's read throttling (250 burst, 25 a second), a
// redelivery that read every server again would spend its budget on
// servers already done and could stall at the same place every time
// with a thousand servers. So an event's rotation reads the servers not
// confirmed within confirmedFor first, and counts a confirmed one it had
// no time left to read as current. Manual requests and versionless ones
// (the timer's reconcile, which looks for drift) never rely on it.
type confirmations struct {
	mu sync.Mutex
	m  map[string]confirmation // by lower-case server ID; bounded by the map's servers
}

type confirmation struct {
	version string
	at      time.Time
}

// confirmedFor bounds how long a confirmation is trusted: long enough for
// Event Grid's first redeliveries (10 s, 30 s, 1 min, 5 min, 10 min),
// short enough that drift made behind the product's back is seen soon.
const confirmedFor = 15 * time.Minute

func (c *confirmations) remember(id, version string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]confirmation)
	}
	c.m[strings.ToLower(id)] = confirmation{version: strings.ToLower(version), at: at}
}

func (c *confirmations) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, strings.ToLower(id))
}

func (c *confirmations) recent(id, version string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[strings.ToLower(id)]
	return ok && e.version == strings.ToLower(version) && now.Sub(e.at) < confirmedFor
}

// versionCache reads each version of one key once per rotation (or
// status), however many servers are on it, and the key's version listing
// at most once.
type versionCache struct {
	mu     sync.Mutex
	m      map[string]*entry[*KeyVersion]
	listed *entry[[]KeyVersion]
}

// entry is one read that concurrent callers share: the first one makes
// it, the others wait for it.
type entry[T any] struct {
	ready chan struct{}
	v     T
	err   error
}

// await waits for e, or for ctx to end.
func (e *entry[T]) await(ctx context.Context) (T, error) {
	select {
	case <-e.ready:
		return e.v, e.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// get returns ref's metadata; nil when the version does not exist, and a
// disabled KeyVersion when Key Vault refuses to describe a disabled one.
func (c *versionCache) get(ctx context.Context, keys Keys, ref KeyRef) (*KeyVersion, error) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]*entry[*KeyVersion])
	}
	e, ok := c.m[strings.ToLower(ref.Version)]
	if !ok {
		e = &entry[*KeyVersion]{ready: make(chan struct{})}
		c.m[strings.ToLower(ref.Version)] = e
	}
	c.mu.Unlock()

	if !ok {
		v, err := keys.Key(ctx, ref)
		switch {
		case err == nil:
			e.v = &v
		case errors.Is(err, ErrDisabled):
			e.v, e.err = c.disabled(ctx, keys, ref)
		case !errors.Is(err, ErrNotFound):
			e.err = err
		}
		close(e.ready)
	}
	return e.await(ctx)
}

// disabled describes a version Key Vault refuses to GET because it is
// disabled. The key's version listing still carries its attributes, the
// creation time included: without it, a server on a disabled version
// newer than the target could not be told from one on an older version.
func (c *versionCache) disabled(ctx context.Context, keys Keys, ref KeyRef) (*KeyVersion, error) {
	vs, err := c.versions(ctx, keys, ref)
	if err != nil {
		return nil, fmt.Errorf("list versions to date disabled version %s: %w", ref.Version, err)
	}
	for _, v := range vs {
		if strings.EqualFold(v.Ref.Version, ref.Version) {
			v.Ref, v.Enabled = ref, false // named as the map names the key
			return &v, nil
		}
	}
	// Disabled, yet not listed: deleted in between. Undated, it orders
	// before every dated version.
	return &KeyVersion{Ref: ref, Enabled: false}, nil
}

// versions lists the versions of ref's key, once.
func (c *versionCache) versions(ctx context.Context, keys Keys, ref KeyRef) ([]KeyVersion, error) {
	c.mu.Lock()
	e := c.listed
	first := e == nil
	if first {
		e = &entry[[]KeyVersion]{ready: make(chan struct{})}
		c.listed = e
	}
	c.mu.Unlock()

	if first {
		e.v, e.err = keys.Versions(ctx, ref.Versionless())
		close(e.ready)
	}
	return e.await(ctx)
}
