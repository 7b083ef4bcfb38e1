package azure

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// EventHandler rotates for a batch of decoded events, as
// *rotation.Rotator does: events of one key share one rotation.
type EventHandler interface {
	HandleEvents(ctx context.Context, events []rotation.Event) []rotation.EventResult
}

var _ EventHandler = (*rotation.Rotator)(nil)

// ReplayBatch is how many events one HandleEvents call gets unless told
// otherwise: the events of one key within a batch share a rotation, and
// later batches find those servers current.
const ReplayBatch = 500

// ReplayOptions configures DeadLetters.Replay. The zero value replays
// every unmarked blob.
type ReplayOptions struct {
	// Since skips blobs dead-lettered before it (by the hour in the
	// blob's path, else its last modification); zero: none skipped.
	Since time.Time

	// DryRun marks nothing. The handler decides whether anything is
	// written to servers: give it a dry-run rotator.
	DryRun bool

	// Again replays blobs already marked done as well.
	Again bool

	// Batch is how many events one HandleEvents call gets at most; a
	// blob is never split. Zero: ReplayBatch.
	Batch int

	// Progress, when set, is called after every batch.
	Progress func(ReplaySummary)

	Logger *slog.Logger // nil: discard
}

// ReplaySummary counts what a replay did.
type ReplaySummary struct {
	Blobs      int `json:"blobs"`          // listed under the prefix
	TooOld     int `json:"tooOld"`         // skipped: before ReplayOptions.Since
	Done       int `json:"done"`           // skipped: marked done by an earlier run
	Replayed   int `json:"replayed"`       // every event ended final; marked (unless a dry run)
	Unfinished int `json:"unfinished"`     // left unmarked: an event could succeed on a later run
	Events     int `json:"events"`         // events decoded from the replayed blobs
	Poison     int `json:"poison"`         // events that could not be decoded
	Sent       int `json:"sent,omitempty"` // events Event Grid accepted (Republish; in a dry run, would be sent)

	// Results has one entry per blob processed, in order; never nil.
	Results []BlobResult `json:"results"`
}

// BlobResult is what became of one blob.
type BlobResult struct {
	Name    string                 `json:"name"`
	Outcome string                 `json:"outcome,omitempty"` // the Outcome* recorded; empty when unfinished
	Marked  bool                   `json:"marked"`
	Poison  int                    `json:"poison,omitempty"`
	Sent    int                    `json:"sent,omitempty"`  // events Event Grid accepted (Republish)
	Error   string                 `json:"error,omitempty"` // reading or marking failed
	Events  []rotation.EventResult `json:"events"`
}

// Final reports whether every event of the blob ended final.
func (b BlobResult) Final() bool { return b.Outcome != "" }

// Replay processes the dead-letter blobs through h and marks each blob
// done once every event in it ended final (rotated, current, skipped,
// ignored, failed for good, or undecodable). A blob with an event that a
// later run could still finish is left unmarked, so a crash or a failure
// loses nothing and a second run repeats only what is unfinished.
//
// The error is a listing failure, or the reading and marking failures
// joined, which are returned and not logged (each is also in its
// BlobResult); the summary says what was done either way.
func (d *DeadLetters) Replay(ctx context.Context, h EventHandler, opts ReplayOptions) (ReplaySummary, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Batch <= 0 {
		opts.Batch = ReplayBatch
	}

	sum := ReplaySummary{Results: []BlobResult{}}
	blobs, err := d.List(ctx)
	if err != nil {
		return sum, err
	}
	sum.Blobs = len(blobs)

	var errs []error
	var batch []pendingBlob
	events := 0
	flush := func() {
		if len(batch) == 0 {
			return
		}
		errs = append(errs, d.replayBatch(ctx, h, batch, opts, &sum, log)...)
		batch, events = nil, 0
		if opts.Progress != nil {
			opts.Progress(sum)
		}
	}
	for _, b := range blobs {
		if ctx.Err() != nil {
			flush()
			return sum, errors.Join(append(errs, ctx.Err())...)
		}
		if opts.skips(b, &sum) {
			continue
		}

		p := pendingBlob{blob: b}
		data, err := d.Read(ctx, b)
		if err != nil {
			sum.Unfinished++
			sum.Results = append(sum.Results, BlobResult{Name: b.Name, Error: err.Error(),
				Events: []rotation.EventResult{}})
			errs = append(errs, err)
			continue
		}
		p.events, p.decodeErr = rotation.DecodeEvents(data)
		if p.decodeErr != nil {
			p.poison = poisonCount(data, len(p.events))
		}
		if events > 0 && events+len(p.events) > opts.Batch {
			flush()
		}
		batch = append(batch, p)
		events += len(p.events)
	}
	flush()
	return sum, errors.Join(errs...)
}

// skips reports whether o leaves b alone (dead-lettered before Since, or
// marked done without Again), and counts it in sum when so.
func (o ReplayOptions) skips(b DeadLetterBlob, sum *ReplaySummary) bool {
	switch {
	case !o.Since.IsZero() && b.Time().Before(o.Since):
		sum.TooOld++
	case !b.Replayed.IsZero() && !o.Again:
		sum.Done++
	default:
		return false
	}
	return true
}

// pendingBlob is a read blob waiting for its batch.
type pendingBlob struct {
	blob      DeadLetterBlob
	events    []rotation.Event
	poison    int
	decodeErr error
}

// replayBatch handles the events of several blobs at once, then judges
// and marks each blob.
func (d *DeadLetters) replayBatch(ctx context.Context, h EventHandler, batch []pendingBlob,
	opts ReplayOptions, sum *ReplaySummary, log *slog.Logger) []error {
	var all []rotation.Event
	for _, p := range batch {
		all = append(all, p.events...)
	}
	results := []rotation.EventResult{}
	if len(all) > 0 {
		results = h.HandleEvents(ctx, all)
	}

	var errs []error
	for _, p := range batch {
		res := BlobResult{Name: p.blob.Name, Poison: p.poison, Events: results[:len(p.events)]}
		results = results[len(p.events):]
		sum.Events += len(p.events)
		sum.Poison += p.poison
		if p.decodeErr != nil {
			log.ErrorContext(ctx, "dead-letter blob holds events that cannot be decoded",
				"blob", p.blob.Name, "poison", p.poison, "err", p.decodeErr)
		}

		m, final := judge(res.Events, p.poison)
		if !final {
			sum.Unfinished++
			log.WarnContext(ctx, "dead-letter blob left for a later run: some event could still succeed",
				"blob", p.blob.Name)
			sum.Results = append(sum.Results, res)
			continue
		}
		res.Outcome = m.Outcome
		sum.Replayed++
		if !opts.DryRun {
			m.Time = time.Now()
			if err := d.MarkDone(ctx, p.blob, m); err != nil {
				res.Error = err.Error()
				errs = append(errs, err)
			} else {
				res.Marked = true
				log.InfoContext(ctx, "dead-letter blob replayed", "blob", p.blob.Name,
					"outcome", m.Outcome, "events", m.Events)
			}
		}
		sum.Results = append(sum.Results, res)
	}
	return errs
}

// judge summarises a blob's results and reports whether every event in
// it ended final.
func judge(results []rotation.EventResult, poison int) (Mark, bool) {
	m := Mark{Outcome: OutcomeOK, Events: len(results) + poison, Poison: poison}
	for _, r := range results {
		switch {
		case r.Ignored != "":
			m.Ignored++
		case r.Report == nil || !r.Report.Final():
			return m, false
		case !r.Report.OK():
			m.Failed++
		}
	}
	switch {
	case poison > 0:
		m.Outcome = OutcomeUndecodable
	case m.Failed > 0:
		m.Outcome = OutcomeFailed
	}
	return m, true
}

// poisonCount is how many events of data did not decode: the array's
// length less those that did, or one when data is no array at all.
func poisonCount(data []byte, decoded int) int {
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		return 1
	}
	return max(len(raws)-decoded, 0)
}
