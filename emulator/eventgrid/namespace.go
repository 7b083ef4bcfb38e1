package eventgrid

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Defaults of a namespace subscription, as Azure sets them.
const (
	DefaultLockDuration     = 60 * time.Second
	DefaultMaxDeliveryCount = 10
)

// Why an event was dead-lettered, in Settled.Reason.
const (
	ReasonRejected                 = "Rejected"
	ReasonMaxDeliveryCountExceeded = "MaxDeliveryCountExceeded"
)

// States of an event waiting in a subscription, in EventState.State.
const (
	StateAvailable = "available" // can be received
	StateLocked    = "locked"    // received; its lock token is valid
	StateDelayed   = "delayed"   // released with a delay that has not passed
)

// Receive limits of the namespace API (maxEvents, maxWaitTime).
const (
	defaultMaxEvents = 1
	maxMaxEvents     = 100
	defaultMaxWait   = 60
	minMaxWait       = 10
	maxMaxWait       = 120
)

// releaseDelays are the releaseDelayInSeconds values Azure accepts.
var releaseDelays = map[string]time.Duration{
	"0": 0, "10": 10 * time.Second, "60": time.Minute,
	"600": 10 * time.Minute, "3600": time.Hour,
}

// SubscriptionOptions configures a namespace topic's queue
// subscription.
type SubscriptionOptions struct {
	// LockDuration is how long a received event stays locked to its
	// receiver; zero: DefaultLockDuration.
	LockDuration time.Duration

	// MaxDeliveryCount is how many times an event is received before
	// it is dead-lettered instead of made available again; zero:
	// DefaultMaxDeliveryCount.
	MaxDeliveryCount int
}

// NamespaceTopic is a topic of the emulated Event Grid namespace, whose
// endpoint is the server's URL.
type NamespaceTopic struct {
	s         *Server
	name      string
	subs      map[string]*Subscription
	published []Published
}

// Subscription is a queue subscription of a namespace topic. Events
// published after it was added wait in it until they are
// acknowledged, rejected or dead-lettered.
type Subscription struct {
	s       *Server
	topic   string
	name    string
	opts    SubscriptionOptions
	pending []*entry
	tokens  map[string]*entry
	acked   []Settled
	dead    []Settled
	changed chan struct{} // closed when events became available
}

// entry is one event waiting in a subscription.
type entry struct {
	id          string
	event       json.RawMessage
	deliveries  int
	state       string
	token       string
	lockedUntil time.Time
	availableAt time.Time
}

// EventState describes an event waiting in a subscription.
type EventState struct {
	ID            string
	State         string    // StateAvailable, StateLocked or StateDelayed
	DeliveryCount int       // how many times it was received
	LockedUntil   time.Time // when locked
	AvailableAt   time.Time // when delayed
	Event         json.RawMessage
}

// Settled is an event that left a subscription.
type Settled struct {
	ID            string
	DeliveryCount int
	Time          time.Time
	Reason        string // dead letters only: ReasonRejected, ReasonMaxDeliveryCountExceeded
	Event         json.RawMessage
}

// AddNamespaceTopic creates the namespace topic name, replacing any
// topic of that name with its subscriptions.
func (s *Server) AddNamespaceTopic(name string) *NamespaceTopic {
	n := &NamespaceTopic{s: s, name: name, subs: map[string]*Subscription{}}
	s.mu.Lock()
	s.namespaces[name] = n
	s.mu.Unlock()
	return n
}

// NamespaceTopic returns the namespace topic name, or nil.
func (s *Server) NamespaceTopic(name string) *NamespaceTopic {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.namespaces[name]
}

// Name is the topic's name.
func (n *NamespaceTopic) Name() string { return n.name }

// Endpoint is the namespace endpoint aznamespaces clients take: the
// server's URL.
func (n *NamespaceTopic) Endpoint() string { return n.s.URL() }

// Published returns a copy of the events published to the topic.
func (n *NamespaceTopic) Published() []Published {
	n.s.mu.Lock()
	defer n.s.mu.Unlock()
	return slices.Clone(n.published)
}

// AddSubscription creates the subscription name, replacing any
// subscription of that name.
func (n *NamespaceTopic) AddSubscription(name string, opts SubscriptionOptions) *Subscription {
	if opts.LockDuration <= 0 {
		opts.LockDuration = DefaultLockDuration
	}
	if opts.MaxDeliveryCount <= 0 {
		opts.MaxDeliveryCount = DefaultMaxDeliveryCount
	}
	sub := &Subscription{
		s:       n.s,
		topic:   n.name,
		name:    name,
		opts:    opts,
		tokens:  map[string]*entry{},
		changed: make(chan struct{}),
	}
	n.s.mu.Lock()
	n.subs[name] = sub
	n.s.mu.Unlock()
	return sub
}

// Subscription returns the subscription name, or nil.
func (n *NamespaceTopic) Subscription(name string) *Subscription {
	n.s.mu.Lock()
	defer n.s.mu.Unlock()
	return n.subs[name]
}

// Name is the subscription's name.
func (sub *Subscription) Name() string { return sub.name }

// Events returns the events waiting in the subscription, oldest
// first, with expired locks and passed delays applied.
func (sub *Subscription) Events() []EventState {
	sub.s.mu.Lock()
	defer sub.s.mu.Unlock()
	sub.sweep(time.Now())
	out := make([]EventState, 0, len(sub.pending))
	for _, e := range sub.pending {
		st := EventState{ID: e.id, State: e.state, DeliveryCount: e.deliveries, Event: e.event}
		switch e.state {
		case StateLocked:
			st.LockedUntil = e.lockedUntil
		case StateDelayed:
			st.AvailableAt = e.availableAt
		}
		out = append(out, st)
	}
	return out
}

// Acknowledged returns the events acknowledged so far, in order.
func (sub *Subscription) Acknowledged() []Settled {
	sub.s.mu.Lock()
	defer sub.s.mu.Unlock()
	return slices.Clone(sub.acked)
}

// DeadLetters returns the events rejected or dead-lettered after too
// many deliveries, in order.
func (sub *Subscription) DeadLetters() []Settled {
	sub.s.mu.Lock()
	defer sub.s.mu.Unlock()
	sub.sweep(time.Now())
	return slices.Clone(sub.dead)
}

// The methods below run with s.mu held.

// sweep ends expired locks and passed delays, and returns the next time
// either happens again (zero: never).
func (sub *Subscription) sweep(now time.Time) (next time.Time) {
	woke := false
	kept := sub.pending[:0]
	for _, e := range sub.pending {
		switch {
		case e.state == StateLocked && !now.Before(e.lockedUntil):
			delete(sub.tokens, e.token)
			e.token = ""
			if e.deliveries >= sub.opts.MaxDeliveryCount {
				sub.deadLetter(e, ReasonMaxDeliveryCountExceeded, now)
				continue
			}
			e.state, woke = StateAvailable, true
		case e.state == StateDelayed && !now.Before(e.availableAt):
			e.state, woke = StateAvailable, true
		}
		kept = append(kept, e)

		at := e.lockedUntil
		if e.state == StateDelayed {
			at = e.availableAt
		}
		if e.state != StateAvailable && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	clear(sub.pending[len(kept):])
	sub.pending = kept
	if woke {
		sub.notify()
	}
	return next
}

func (sub *Subscription) notify() {
	close(sub.changed)
	sub.changed = make(chan struct{})
}

func (sub *Subscription) deadLetter(e *entry, reason string, now time.Time) {
	sub.dead = append(sub.dead, Settled{
		ID: e.id, DeliveryCount: e.deliveries, Time: now, Reason: reason, Event: e.event,
	})
}

func (sub *Subscription) enqueue(p Published) {
	sub.pending = append(sub.pending, &entry{id: p.ID, event: p.Raw, state: StateAvailable})
	sub.notify()
}

// take locks up to max available events for a receiver.
func (sub *Subscription) take(now time.Time, max int) []receiveDetail {
	var out []receiveDetail
	for _, e := range sub.pending {
		if len(out) == max {
			break
		}
		if e.state != StateAvailable {
			continue
		}
		e.deliveries++
		e.state = StateLocked
		e.token = newLockToken()
		e.lockedUntil = now.Add(sub.opts.LockDuration)
		sub.tokens[e.token] = e
		out = append(out, receiveDetail{
			Broker: brokerProperties{LockToken: e.token, DeliveryCount: e.deliveries},
			Event:  e.event,
		})
	}
	if len(out) > 0 {
		// Other receivers learn of the new lock's expiry.
		sub.notify()
	}
	return out
}

// remove drops e from the pending events and its token.
func (sub *Subscription) remove(e *entry) {
	delete(sub.tokens, e.token)
	sub.pending = slices.DeleteFunc(sub.pending, func(x *entry) bool { return x == e })
}

func newLockToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Wire shapes, as aznamespaces' models_serde.go reads them.
type (
	brokerProperties struct {
		LockToken     string `json:"lockToken"`
		DeliveryCount int    `json:"deliveryCount"`
	}
	receiveDetail struct {
		Broker brokerProperties `json:"brokerProperties"`
		Event  json.RawMessage  `json:"event"`
	}
	receiveResult struct {
		Value []receiveDetail `json:"value"`
	}
	lockTokensBody struct {
		LockTokens []string `json:"lockTokens"`
	}
	tokenError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	failedLockToken struct {
		LockToken string     `json:"lockToken"`
		Error     tokenError `json:"error"`
	}
	settleResult struct {
		FailedLockTokens    []failedLockToken `json:"failedLockTokens"`
		SucceededLockTokens []string          `json:"succeededLockTokens"`
	}
)

// tokenLost is Azure's answer for a lock token that is unknown,
// settled or expired.
var tokenLost = tokenError{Code: "TokenLost", Message: "Token has expired."}

// lookup finds the subscription a request names, answering 404 if
// there is none. It runs without s.mu held.
func (s *Server) lookup(w http.ResponseWriter, rt route) *Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.namespaces[rt.topic]
	if n == nil {
		writeError(w, http.StatusNotFound, "NotFound", "topic "+rt.topic+" does not exist")
		return nil
	}
	sub := n.subs[rt.sub]
	if sub == nil {
		writeError(w, http.StatusNotFound, "NotFound",
			"event subscription "+rt.sub+" does not exist in topic "+rt.topic)
		return nil
	}
	return sub
}

// publishNamespace serves SenderClient.SendEvent and SendEvents.
func (s *Server) publishNamespace(w http.ResponseWriter, r *http.Request, name string, body []byte) {
	mt := mediaType(r.Header.Get("Content-Type"))
	if mt != ctCloudEvent && mt != ctCloudEventBatch {
		writeError(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType",
			"content type "+mt+" is not supported; send CloudEvents in JSON format")
		return
	}
	raws, err := splitEvents(body, mt == ctCloudEvent)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", badEventMessage(err))
		return
	}
	events, _, err := parseEvents(raws, name, parseCloudEvent)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", badEventMessage(err))
		return
	}

	s.mu.Lock()
	n := s.namespaces[name]
	if n != nil {
		n.publish(events)
	}
	s.mu.Unlock()
	if n == nil {
		writeError(w, http.StatusNotFound, "NotFound", "topic "+name+" does not exist")
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// Publish queues CloudEvents (JSON objects) in the topic's
// subscriptions as a publish request would, without a client. It
// returns an error naming the first invalid event and then queues
// none.
func (n *NamespaceTopic) Publish(events ...json.RawMessage) error {
	ps, i, err := parseEvents(events, n.name, func(raw json.RawMessage) (Published, error) {
		return parseCloudEvent(slices.Clone(raw))
	})
	if err != nil {
		return fmt.Errorf("publish event %d to topic %s: %s", i, n.name, badEventMessage(err))
	}
	n.s.mu.Lock()
	n.publish(ps)
	n.s.mu.Unlock()
	return nil
}

// publish records events and queues them; s.mu is held.
func (n *NamespaceTopic) publish(events []Published) {
	n.published = append(n.published, events...)
	for _, sub := range n.subs {
		for _, p := range events {
			sub.enqueue(p)
		}
	}
}

// receive serves ReceiverClient.ReceiveEvents: it answers as soon as
// at least one event is available, or with none after maxWaitTime.
func (s *Server) receive(w http.ResponseWriter, r *http.Request, rt route) {
	q := r.URL.Query()
	maxEvents, ok := intParam(q.Get("maxEvents"), defaultMaxEvents, 1, maxMaxEvents)
	if !ok {
		writeError(w, http.StatusBadRequest, "BadRequest", "maxEvents must be between 1 and 100")
		return
	}
	wait, ok := intParam(q.Get("maxWaitTime"), defaultMaxWait, minMaxWait, maxMaxWait)
	if !ok {
		writeError(w, http.StatusBadRequest, "BadRequest",
			"maxWaitTime must be between 10 and 120 seconds")
		return
	}
	sub := s.lookup(w, rt)
	if sub == nil {
		return
	}

	deadline := time.Now().Add(time.Duration(wait) * time.Second)
	for {
		now := time.Now()
		s.mu.Lock()
		next := sub.sweep(now)
		got := sub.take(now, maxEvents)
		changed := sub.changed
		s.mu.Unlock()

		remaining := deadline.Sub(now)
		if len(got) > 0 || remaining <= 0 || s.closed() {
			writeJSON(w, http.StatusOK, receiveResult{Value: got})
			return
		}
		if !next.IsZero() && next.Sub(now) < remaining {
			remaining = next.Sub(now)
		}

		timer := time.NewTimer(remaining)
		select {
		case <-changed:
		case <-timer.C:
		case <-s.done:
		case <-r.Context().Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

// settle serves acknowledge, release, reject and renewLock: each lock
// token succeeds or fails on its own.
func (s *Server) settle(w http.ResponseWriter, r *http.Request, rt route, body []byte) {
	var req lockTokensBody
	if err := json.Unmarshal(body, &req); err != nil || len(req.LockTokens) == 0 {
		writeError(w, http.StatusBadRequest, "BadRequest",
			"the body must hold lockTokens with at least one lock token")
		return
	}
	var delay time.Duration
	if rt.op == OpRelease {
		d, ok := releaseDelays[r.URL.Query().Get("releaseDelayInSeconds")]
		if !ok && r.URL.Query().Has("releaseDelayInSeconds") {
			writeError(w, http.StatusBadRequest, "BadRequest",
				"releaseDelayInSeconds must be one of 0, 10, 60, 600, 3600")
			return
		}
		delay = d
	}
	sub := s.lookup(w, rt)
	if sub == nil {
		return
	}

	res := settleResult{FailedLockTokens: []failedLockToken{}, SucceededLockTokens: []string{}}
	now := time.Now()
	s.mu.Lock()
	sub.sweep(now)
	for _, tok := range req.LockTokens {
		e := sub.tokens[tok]
		if e == nil {
			res.FailedLockTokens = append(res.FailedLockTokens,
				failedLockToken{LockToken: tok, Error: tokenLost})
			continue
		}
		sub.apply(rt.op, e, now, delay)
		res.SucceededLockTokens = append(res.SucceededLockTokens, tok)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, res)
}

// apply settles one locked event.
func (sub *Subscription) apply(op Operation, e *entry, now time.Time, delay time.Duration) {
	switch op {
	case OpAcknowledge:
		sub.remove(e)
		sub.acked = append(sub.acked, Settled{
			ID: e.id, DeliveryCount: e.deliveries, Time: now, Event: e.event,
		})
	case OpReject:
		sub.remove(e)
		sub.deadLetter(e, ReasonRejected, now)
	case OpRenewLock:
		e.lockedUntil = now.Add(sub.opts.LockDuration)
	case OpRelease:
		delete(sub.tokens, e.token)
		e.token = ""
		if e.deliveries >= sub.opts.MaxDeliveryCount {
			sub.remove(e)
			sub.deadLetter(e, ReasonMaxDeliveryCountExceeded, now)
			return
		}
		e.state = StateAvailable
		if delay > 0 {
			e.state, e.availableAt = StateDelayed, now.Add(delay)
		}
		sub.notify()
	}
}

// intParam parses an optional integer query parameter within [lo, hi].
func intParam(v string, def, lo, hi int) (int, bool) {
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}
