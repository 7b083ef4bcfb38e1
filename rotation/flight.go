package rotation

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
)

// Rotations of one key run one after another, never side by side. Two
// rotations of a key that overlapped could each read a server on the old
// version and PATCH it, the older target landing last: the server would
// move backwards. So every key has a queue of flights; a flight is one
// rotation that the requests it absorbed share.
//
// A request joins the running flight only when that flight answers it
// exactly: the same options and the same explicit version, since a
// rotation resolves "the current version" when it starts and a request for
// it made later may mean a newer one. Otherwise it joins a queued flight
// with the same options (event requests for different versions merge: the
// flight then targets the newest of their versions and the current one)
// or queues a new one. A request never receives the report of a rotation
// with other options: a dry run or a manual request is not answered by an
// event's rotation.

// keyQueue is the flights of one key: the one running (or whose turn it
// is) and those waiting, in arrival order. Guarded by Rotator.mu.
type keyQueue struct {
	id      string
	running *flight
	waiting []*flight
}

// flight is one rotation of a key that concurrent requests share.
type flight struct {
	q       *keyQueue
	req     Request
	turn    chan struct{} // closed when the flight may start
	done    chan struct{} // closed once report is set
	started bool          // a waiter took the turn
	waiters int           // requests still waiting for the report
	report  Report
}

// sameOptions reports whether a and b may share a rotation's report.
func sameOptions(a, b Request) bool {
	return a.Manual == b.Manual && a.AllowOlder == b.AllowOlder && a.DryRun == b.DryRun
}

// answers reports whether the running flight f answers req exactly: the
// same options, and every version req names among f's.
func (f *flight) answers(req Request) bool {
	if !sameOptions(f.req, req) || req.Key.Version == "" {
		return false
	}
	have := f.req.versions()
	for _, v := range req.versions() {
		if !slices.ContainsFunc(have, func(w string) bool { return strings.EqualFold(v, w) }) {
			return false
		}
	}
	return true
}

// absorb merges req into the queued flight f, when it can.
func (f *flight) absorb(req Request) bool {
	switch {
	case !sameOptions(f.req, req):
		return false
	case req.Manual && !strings.EqualFold(f.req.Key.Version, req.Key.Version):
		return false // a person named a version: exactly that one
	}
	f.req.merge(req)
	return true
}

// enqueue returns the flight that will answer req for key id, counting
// the caller among its waiters.
func (r *Rotator) enqueue(id string, req Request) *flight {
	r.mu.Lock()
	defer r.mu.Unlock()

	q := r.keys[id]
	if q == nil {
		q = &keyQueue{id: id}
		r.keys[id] = q
	}
	if f := q.running; f != nil && f.answers(req) {
		f.waiters++
		return f
	}
	for _, f := range q.waiting {
		if f.absorb(req) {
			f.waiters++
			return f
		}
	}

	f := &flight{q: q, req: req, turn: make(chan struct{}), done: make(chan struct{}), waiters: 1}
	q.waiting = append(q.waiting, f)
	if q.running == nil {
		r.advance(q)
	}
	return f
}

// advance gives the turn to q's next flight, or forgets q when none is
// waiting. The caller holds r.mu.
func (r *Rotator) advance(q *keyQueue) {
	if len(q.waiting) == 0 {
		q.running = nil
		delete(r.keys, q.id)
		return
	}
	q.running = q.waiting[0]
	q.waiting = q.waiting[1:]
	close(q.running.turn)
}

// await waits for f's turn and runs it, or for its report when another
// waiter runs it. A caller whose ctx ends first gets a retryable report;
// a flight that nobody waits for any more is dropped.
func (r *Rotator) await(ctx context.Context, t Target, f *flight) Report {
	turn := f.turn
	for {
		select {
		case <-f.done:
			return f.report.clone()

		case <-turn:
			turn = nil
			if ctx.Err() != nil {
				continue // let a waiter with time left run it
			}
			r.mu.Lock()
			if f.started {
				r.mu.Unlock()
				continue
			}
			f.started = true
			req := f.req
			r.mu.Unlock()

			rep := r.fly(ctx, t, f, req)
			return rep.clone()

		case <-ctx.Done():
			r.leave(f)
			return Report{Key: t.Key.String(), Error: "gave up waiting for a rotation in progress: " + ctx.Err().Error(),
				ErrorKind: KindBusy, Retryable: true, Servers: []ServerResult{}}
		}
	}
}

// fly runs f's rotation and hands the turn on, even when the rotation
// panics: a key's queue must never stay blocked, nor the process die.
func (r *Rotator) fly(ctx context.Context, t Target, f *flight, req Request) (rep Report) {
	defer func() {
		if v := recover(); v != nil {
			r.log.ErrorContext(ctx, "rotation aborted: internal error", "key_name", t.Key.Name,
				"key_version", req.Key.Version, "err", fmt.Sprint(v), "stack", string(debug.Stack()))
			rep = Report{Key: t.Key.String(), Error: fmt.Sprintf("rotation aborted: internal error: %v", v),
				ErrorKind: KindUpstream, Servers: []ServerResult{}}
		}
		r.mu.Lock()
		f.report = rep
		close(f.done)
		r.advance(f.q)
		r.mu.Unlock()
	}()
	return r.rotate(ctx, t, req)
}

// leave removes one waiter from f; when it was the last and f has not
// started, f is dropped so that the key's queue moves on.
func (r *Rotator) leave(f *flight) {
	r.mu.Lock()
	defer r.mu.Unlock()

	f.waiters--
	if f.waiters > 0 || f.started {
		return
	}
	q := f.q
	if q.running == f {
		f.started = true
		close(f.done)
		r.advance(q)
		return
	}
	q.waiting = slices.DeleteFunc(q.waiting, func(w *flight) bool { return w == f })
}
