package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/aznamespaces"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// maxSettle is how many lock tokens one settlement request carries.
const maxSettle = 100

// DryPullResult is what cmkrotator pull --dry-run --json prints.
type DryPullResult struct {
	DryRun      bool                   `json:"dryRun"`
	Received    int                    `json:"received"`
	Released    int                    `json:"released"`    // released at once, without delay
	LostLocks   int                    `json:"lostLocks"`   // locks that expired first; those events are available again anyway
	Undecodable int                    `json:"undecodable"` // a real pull would reject (dead-letter) them
	Results     []rotation.EventResult `json:"results"`
}

// pullDryRun receives what is waiting in the subscription, decides for
// it through a dry-run rotator, and releases every event at once without
// delay, so that nothing is consumed. It holds every lock until the end,
// so that no event is received twice, and stops after a receive that
// brings fewer than maxEvents events (or an event already seen, whose
// lock expired).
func pullDryRun(ctx context.Context, r *aznamespaces.ReceiverClient, rot *rotation.Rotator,
	maxEvents int, maxWait time.Duration, log *slog.Logger) (DryPullResult, error) {
	res := DryPullResult{DryRun: true, Results: []rotation.EventResult{}}
	var tokens []string
	var events []rotation.Event
	seen := map[string]bool{}
	var recvErr error
receive:
	for ctx.Err() == nil {
		resp, err := r.ReceiveEvents(ctx, &aznamespaces.ReceiveEventsOptions{
			MaxEvents:   to.Ptr(int32(maxEvents)),
			MaxWaitTime: to.Ptr(int32(maxWait / time.Second)),
		})
		if err != nil {
			if ctx.Err() == nil {
				recvErr = classifyEventGrid("receive events", err)
			}
			break
		}
		res.Received += len(resp.Details)
		for _, d := range resp.Details {
			tokens = append(tokens, *d.BrokerProperties.LockToken)
			if seen[d.Event.ID] {
				break receive
			}
			seen[d.Event.ID] = true
			ev, err := decodeCloudEvent(d.Event)
			if err != nil {
				res.Undecodable++
				log.WarnContext(ctx, "dry run: event cannot be decoded; a pull would reject it", "event_id", d.Event.ID, "err", err)
				continue
			}
			events = append(events, ev)
		}
		if len(resp.Details) < maxEvents {
			break
		}
	}
	if len(events) > 0 {
		res.Results = rot.HandleEvents(ctx, events)
	}

	// Release with a context that outlives an interrupt: every lock
	// should be given back.
	settle := context.WithoutCancel(ctx)
	for i := 0; i < len(tokens); i += maxSettle {
		batch := tokens[i:min(i+maxSettle, len(tokens))]
		rel, err := r.ReleaseEvents(settle, batch, &aznamespaces.ReleaseEventsOptions{
			ReleaseDelayInSeconds: to.Ptr(aznamespaces.ReleaseDelayNoDelay)})
		if err != nil {
			return res, errors.Join(recvErr, classifyEventGrid("release events", err))
		}
		res.Released += len(rel.SucceededLockTokens)
		res.LostLocks += len(rel.FailedLockTokens)
	}
	log.InfoContext(ctx, "dry run: events released without delay", "released", res.Released, "lost_locks", res.LostLocks)
	return res, recvErr
}

// classifyEventGrid names the operation and marks what a later run could
// fix (timeouts, conflicts, throttling, 5xx, authentication and
// permissions, transport failures) as retryable, as the azure package
// does.
func classifyEventGrid(op string, err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %w: %w", op, rotation.ErrRetryable, err)
	}
	switch c := re.StatusCode; {
	case c == http.StatusRequestTimeout, c == http.StatusConflict, c == http.StatusTooManyRequests,
		c >= 500, c == http.StatusUnauthorized, c == http.StatusForbidden:
		return fmt.Errorf("%s: %w: %w", op, rotation.ErrRetryable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// decodeCloudEvent decodes a received CloudEvent through the same decoder
// as pushed events. The SDK holds JSON data as raw bytes.
func decodeCloudEvent(ce messaging.CloudEvent) (rotation.Event, error) {
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

func printDryPull(w io.Writer, res DryPullResult) {
	if len(res.Results) > 0 {
		printEvents(w, res.Results)
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "dry run: received %s, PATCHed nothing, released all %d at once without delay (nothing consumed)",
		plural(res.Received, "event"), res.Released)
	if res.LostLocks > 0 {
		fmt.Fprintf(w, "; %d locks had expired (those events are available again)", res.LostLocks)
	}
	if res.Undecodable > 0 {
		fmt.Fprintf(w, "; %d undecodable (a pull would reject them)", res.Undecodable)
	}
	fmt.Fprintln(w)
}
