package azure

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/aznamespaces"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// Defaults of PullOptions.
const (
	defaultPullMax  = 20
	defaultPullWait = 60 * time.Second // Event Grid's own default
	// A third of the default 60 s lock: two renewals can fail before
	// a lock is lost.
	defaultRenewEvery = 20 * time.Second
	// Receive failures back off from 1 s to a minute.
	pullBackoffFirst = time.Second
	pullBackoffMax   = time.Minute
	// With Once, a receive that failed in a way a retry could fix is
	// tried this often in all before the pull gives up.
	pullOnceAttempts = 3
	// A settlement gets this long after an interrupt, so that shutdown
	// never waits on Event Grid for ever; an event left unsettled comes
	// back when its lock expires.
	settleTimeout = 30 * time.Second
)

// PullOptions configures Pull. The zero value runs until ctx ends.
type PullOptions struct {
	MaxEvents  int           // per receive, 1–100; zero: 20
	MaxWait    time.Duration // how long a receive waits for events, 10–120 s; zero: 60 s
	RenewEvery time.Duration // lock renewal period while events are worked on; zero: 20 s (under the 60 s default lock)

	// Once drains the subscription and returns: it stops after a
	// receive that brings fewer than MaxEvents events, and returns a
	// receive error once pullOnceAttempts receives failed in a row
	// (at once when no retry could help) instead of retrying for ever.
	Once bool

	// DryRun receives once, has h decide (h must write nothing itself,
	// e.g. a Rotator in dry-run mode), and releases every event at once
	// without delay, undecodable ones too: nothing is consumed.
	DryRun bool

	// Progress, when set, is called after every settled batch.
	Progress func(PullSummary)

	// Results, when set, is called with the results of every batch.
	Results func([]rotation.EventResult)

	Logger *slog.Logger // nil: discard
}

// PullSummary counts what Pull did.
type PullSummary struct {
	Receives     int `json:"receives"`
	Received     int `json:"received"`
	Acknowledged int `json:"acknowledged"` // ended final
	Released     int `json:"released"`     // could succeed later: released with a delay
	Rejected     int `json:"rejected"`     // could not be decoded: dead-lettered
	Undecodable  int `json:"undecodable"`  // could not be decoded (rejected, or released in a dry run)
	Renewals     int `json:"renewals"`     // lock renewal requests
	LostLocks    int `json:"lostLocks"`    // settlements Event Grid refused (the lock had expired)
	Failed       int `json:"failed"`       // events acknowledged although their rotation failed for good
	Unsettled    int `json:"unsettled"`    // settlement requests that failed: redelivered when their locks expire
}

// Pull receives Key Vault events from an Event Grid namespace topic
// subscription and rotates for them through h: events that ended final
// are acknowledged, those a later attempt could finish are released with
// a delay that grows with their delivery count, and those that cannot be
// decoded are rejected (dead-lettered). Locks are renewed every
// RenewEvery while a batch is worked on. Nothing that did not end final
// is ever acknowledged.
//
// Pull runs until ctx ends (then it returns nil), or with Once until the
// subscription is drained. A receive refused for want of permission
// (401, 403) is retried like any other failure, for a new role
// assignment takes minutes to apply, with an error logged each time that
// names the role wanted; the pull stops for good only when the topic or
// subscription does not exist.
func Pull(ctx context.Context, r *aznamespaces.ReceiverClient, h EventHandler, opts PullOptions) (PullSummary, error) {
	opts = opts.withDefaults()
	var sum PullSummary
	backoff, failures := pullBackoffFirst, 0
	for ctx.Err() == nil {
		resp, err := r.ReceiveEvents(ctx, &aznamespaces.ReceiveEventsOptions{
			MaxEvents:   to.Ptr(int32(opts.MaxEvents)),
			MaxWaitTime: to.Ptr(int32(opts.MaxWait / time.Second)),
		})
		if ctx.Err() != nil {
			return sum, nil
		}
		if err != nil {
			err = receiveError(err)
			failures++
			switch {
			case errors.Is(err, rotation.ErrNotFound):
				return sum, err
			case opts.Once && (failures >= pullOnceAttempts || !errors.Is(err, rotation.ErrRetryable)):
				return sum, err
			}
			wait := backoff/2 + rand.N(backoff/2+1)
			msg := "receive failed; retrying"
			switch {
			case errors.Is(err, errReceiveForbidden):
				msg = "receive refused: " + errReceiveForbidden.Error() + "; retrying"
			case errors.Is(err, errReceiveUnauthorized):
				msg = "receive refused: " + errReceiveUnauthorized.Error() + "; retrying"
			}
			opts.Logger.ErrorContext(ctx, msg, "retry_in", wait,
				"next_retry", time.Now().Add(wait).UTC().Format(time.RFC3339), "failures", failures, "err", err)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, pullBackoffMax)
			continue
		}
		backoff, failures = pullBackoffFirst, 0
		sum.Receives++
		sum.Received += len(resp.Details)
		if len(resp.Details) > 0 {
			pullBatch(ctx, r, h, resp.Details, opts, &sum)
			if opts.Progress != nil {
				opts.Progress(sum)
			}
		}
		if opts.DryRun || opts.Once && len(resp.Details) < opts.MaxEvents {
			return sum, nil
		}
	}
	return sum, nil
}

// Why Event Grid refuses a receive.
var (
	errReceiveForbidden = errors.New("the identity needs the EventGrid Data Receiver role on the namespace " +
		"topic subscription (a new role assignment can take minutes to apply)")
	errReceiveUnauthorized = errors.New("the credential was refused: a wrong access key, or a token " +
		"Event Grid does not take")
)

// receiveError classifies a receive failure. A refusal (401, 403) says
// what is wanted, and is retryable whatever else says, for permissions
// propagate.
func receiveError(err error) error {
	cerr := classify("receive events", err)
	re, ok := errors.AsType[*azcore.ResponseError](err)
	if !ok {
		return cerr
	}
	var why error
	switch re.StatusCode {
	case http.StatusForbidden:
		why = errReceiveForbidden
	case http.StatusUnauthorized:
		why = errReceiveUnauthorized
	default:
		return cerr
	}
	if !errors.Is(cerr, rotation.ErrRetryable) {
		cerr = fmt.Errorf("%w: %w", rotation.ErrRetryable, cerr)
	}
	return fmt.Errorf("%w: %w", cerr, why)
}

func (o PullOptions) withDefaults() PullOptions {
	if o.MaxEvents <= 0 {
		o.MaxEvents = defaultPullMax
	}
	o.MaxEvents = min(o.MaxEvents, 100)
	if o.MaxWait <= 0 {
		o.MaxWait = defaultPullWait
	}
	o.MaxWait = min(max(o.MaxWait, 10*time.Second), 120*time.Second)
	if o.RenewEvery <= 0 {
		o.RenewEvery = defaultRenewEvery
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// pullBatch rotates for one received batch, renewing its locks meanwhile,
// and settles every event.
func pullBatch(ctx context.Context, r *aznamespaces.ReceiverClient, h EventHandler,
	details []aznamespaces.ReceiveDetails, opts PullOptions, sum *PullSummary) {
	log := opts.Logger
	var events []rotation.Event
	var decoded []aznamespaces.ReceiveDetails
	var reject []string
	for _, d := range details {
		token := *d.BrokerProperties.LockToken
		e, err := decodeReceived(d.Event)
		if err != nil {
			log.ErrorContext(ctx, "event cannot be decoded; rejecting it", "event_id", d.Event.ID,
				"dry_run", opts.DryRun, "err", err)
			sum.Undecodable++
			reject = append(reject, token)
			continue
		}
		log.InfoContext(ctx, "event received", "event_id", e.ID, "event_type", e.Type, "key_name", e.Key.Name,
			"key_version", e.Key.Version, "attempt", deliveryCount(d))
		events = append(events, e)
		decoded = append(decoded, d)
	}
	if opts.DryRun {
		pullDry(ctx, r, h, events, decoded, reject, opts, sum)
		return
	}
	if len(reject) > 0 {
		sum.Rejected += settle(ctx, opts, sum, "reject", reject,
			func(ctx context.Context) (settled, error) {
				res, err := r.RejectEvents(ctx, reject, nil)
				return settled(res.RejectEventsResult), err
			})
	}
	if len(events) == 0 {
		return
	}

	stop := renewLocks(ctx, r, decoded, opts, sum)
	results := h.HandleEvents(ctx, events)
	stop()
	if opts.Results != nil {
		opts.Results(results)
	}

	var ack []string
	release := map[aznamespaces.ReleaseDelay][]string{}
	for i, res := range results {
		d := decoded[i]
		token := *d.BrokerProperties.LockToken
		switch {
		case res.Ignored != "" || (res.Report != nil && res.Report.Final()):
			if res.Report != nil && !res.Report.OK() {
				sum.Failed++
			}
			ack = append(ack, token)
		default:
			delay := releaseDelay(deliveryCount(d))
			release[delay] = append(release[delay], token)
			log.WarnContext(ctx, "event released for a later attempt", "event_id", res.EventID,
				"attempt", deliveryCount(d), "retry_in", string(delay)+"s")
		}
	}
	if len(ack) > 0 {
		sum.Acknowledged += settle(ctx, opts, sum, "acknowledge", ack,
			func(ctx context.Context) (settled, error) {
				res, err := r.AcknowledgeEvents(ctx, ack, nil)
				return settled(res.AcknowledgeEventsResult), err
			})
	}
	for delay, tokens := range release {
		sum.Released += releaseAll(ctx, r, tokens, delay, opts, sum)
	}
}

// settled is what a settlement answers; the SDK's results of the three
// settlements have this shape.
type settled struct {
	FailedLockTokens    []aznamespaces.FailedLockToken
	SucceededLockTokens []string
}

// settle runs one settlement request for tokens and returns how many
// events it settled. The request outlives an interrupt, for work done
// should be acknowledged rather than redelivered, but only by
// settleTimeout. A failed request is logged and counted in sum, and the
// pull goes on: the events come back when their locks expire.
func settle(ctx context.Context, opts PullOptions, sum *PullSummary, op string, tokens []string,
	call func(context.Context) (settled, error)) int {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()

	res, err := call(sctx)
	if err != nil {
		sum.Unsettled += len(tokens)
		opts.Logger.WarnContext(ctx, "settlement failed; the events will be redelivered when their locks expire",
			"operation", op, "events", len(tokens), "err", classify(op+" events", err))
		return 0
	}
	sum.LostLocks += lost(ctx, opts.Logger, op, res.FailedLockTokens)
	return len(res.SucceededLockTokens)
}

// releaseAll releases tokens with delay and returns how many it released.
func releaseAll(ctx context.Context, r *aznamespaces.ReceiverClient, tokens []string,
	delay aznamespaces.ReleaseDelay, opts PullOptions, sum *PullSummary) int {
	return settle(ctx, opts, sum, "release", tokens, func(ctx context.Context) (settled, error) {
		res, err := r.ReleaseEvents(ctx, tokens, &aznamespaces.ReleaseEventsOptions{ReleaseDelayInSeconds: &delay})
		return settled(res.ReleaseEventsResult), err
	})
}

// pullDry is pullBatch in a dry run: h decides, and every event goes back
// at once, undecodable ones included.
func pullDry(ctx context.Context, r *aznamespaces.ReceiverClient, h EventHandler,
	events []rotation.Event, decoded []aznamespaces.ReceiveDetails, undecodable []string,
	opts PullOptions, sum *PullSummary) {
	if len(events) > 0 {
		stop := renewLocks(ctx, r, decoded, opts, sum)
		results := h.HandleEvents(ctx, events)
		stop()
		if opts.Results != nil {
			opts.Results(results)
		}
	}
	tokens := undecodable
	for _, d := range decoded {
		tokens = append(tokens, *d.BrokerProperties.LockToken)
	}
	n := releaseAll(ctx, r, tokens, aznamespaces.ReleaseDelayNoDelay, opts, sum)
	sum.Released += n
	opts.Logger.InfoContext(ctx, "dry run: events released without delay", "released", n)
}

// renewLocks renews the locks of details every opts.RenewEvery until the
// returned stop is called.
func renewLocks(ctx context.Context, r *aznamespaces.ReceiverClient, details []aznamespaces.ReceiveDetails,
	opts PullOptions, sum *PullSummary) (stop func()) {
	tokens := make([]string, len(details))
	for i, d := range details {
		tokens[i] = *d.BrokerProperties.LockToken
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	renewals := 0
	wg.Go(func() {
		t := time.NewTicker(opts.RenewEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			res, err := r.RenewEventLocks(ctx, tokens, nil)
			mu.Lock()
			renewals++
			mu.Unlock()
			if err != nil {
				opts.Logger.WarnContext(ctx, "lock renewal failed", "events", len(tokens), "err", classify("renew locks", err))
				continue
			}
			if len(res.FailedLockTokens) > 0 {
				opts.Logger.WarnContext(ctx, "locks lost while working; those events will be redelivered",
					"lost", len(res.FailedLockTokens))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		sum.Renewals += renewals
	}
}

// releaseDelay grows with the delivery count: Event Grid takes only 0,
// 10, 60, 600 and 3600 seconds.
func releaseDelay(attempt int) aznamespaces.ReleaseDelay {
	switch {
	case attempt <= 1:
		return aznamespaces.ReleaseDelayTenSeconds
	case attempt <= 3:
		return aznamespaces.ReleaseDelayOneMinute
	case attempt <= 6:
		return aznamespaces.ReleaseDelayTenMinutes
	}
	return aznamespaces.ReleaseDelayOneHour
}

func deliveryCount(d aznamespaces.ReceiveDetails) int {
	if d.BrokerProperties.DeliveryCount == nil {
		return 1
	}
	return int(*d.BrokerProperties.DeliveryCount)
}

func lost(ctx context.Context, log *slog.Logger, op string, failed []aznamespaces.FailedLockToken) int {
	for _, f := range failed {
		code := ""
		if f.Error != nil && f.Error.Code != nil {
			code = *f.Error.Code
		}
		log.WarnContext(ctx, "settlement refused; the event will be redelivered", "operation", op, "code", code)
	}
	return len(failed)
}

// decodeReceived decodes a received CloudEvent through the same decoder
// as pushed events. The SDK holds JSON data as raw bytes.
func decodeReceived(ce messaging.CloudEvent) (rotation.Event, error) {
	m := map[string]any{"specversion": "1.0", "id": ce.ID, "source": ce.Source, "type": ce.Type}
	if ce.Subject != nil {
		m["subject"] = *ce.Subject
	}
	if ce.Time != nil {
		m["time"] = ce.Time.Format(time.RFC3339Nano)
	}
	switch d := ce.Data.(type) {
	case nil:
	case []byte:
		if json.Valid(d) {
			m["data"] = json.RawMessage(d)
		} else {
			m["data_base64"] = base64.StdEncoding.EncodeToString(d)
		}
	default:
		m["data"] = d
	}
	b, err := json.Marshal(m)
	if err != nil {
		return rotation.Event{}, fmt.Errorf("decode event %q: %w", ce.ID, err)
	}
	return rotation.DecodeEvent(b)
}
