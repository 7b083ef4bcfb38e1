package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/aznamespaces"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// recoverFlags are replay's flags for dead letters and re-publishing.
type recoverFlags struct {
	deadLetter string
	connString string
	republish  string
	since      string
	dryRun     bool
	again      bool
}

func (r *recoverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.deadLetter, "dead-letter", "", "replay the dead-letter blobs under this container URL[/prefix]")
	fs.StringVar(&r.connString, "connection-string", "",
		"storage connection string for --dead-letter (e.g. Azurite's); default: $AZURE_STORAGE_CONNECTION_STRING, else the Azure credential")
	fs.StringVar(&r.republish, "republish", "",
		"send the events to this Event Grid custom topic endpoint instead of rotating here (key: $EVENTGRID_KEY, else the Azure credential)")
	fs.StringVar(&r.since, "since", "", "with --dead-letter: only blobs dead-lettered since a time (RFC 3339), a date (2006-01-02) or a duration ago (48h)")
	fs.BoolVar(&r.dryRun, "dry-run", false, "decide and report; PATCH nothing, mark nothing, publish nothing")
	fs.BoolVar(&r.again, "again", false, "with --dead-letter: also replay blobs already marked done")
}

// check refuses, before any setting is read, a --republish endpoint
// that is not https, and a --dead-letter location that is not an https
// container URL unless a storage connection string opens it (Azurite
// serves plain http): the Azure credential is never sent without TLS.
func (r recoverFlags) check(e env) error {
	if r.republish != "" {
		if err := wantHTTPS("--republish", "topic endpoint", r.republish); err != nil {
			return err
		}
	}
	if r.deadLetter == "" || r.conn(e) != "" {
		return nil
	}
	if err := wantHTTPS("--dead-letter", "container URL", r.deadLetter); err != nil {
		return usageError("%v; for Azurite or other plain-http storage, pass --connection-string "+
			"or set AZURE_STORAGE_CONNECTION_STRING", err)
	}
	return nil
}

// conn is the storage connection string for --dead-letter: the flag's,
// else $AZURE_STORAGE_CONNECTION_STRING; "" for the Azure credential.
func (r recoverFlags) conn(e env) string {
	if r.connString != "" {
		return r.connString
	}
	return strings.TrimSpace(e.getenv("AZURE_STORAGE_CONNECTION_STRING"))
}

// wantHTTPS is a usage error unless v, the value of flag, is an
// absolute https URL. It quotes v without its query, which may carry a
// SAS signature.
func wantHTTPS(flag, what, v string) error {
	if u, err := url.Parse(v); err == nil && u.Scheme == "https" && u.Host != "" {
		return nil
	}
	shown, _, _ := strings.Cut(v, "?")
	return usageError("%s: want an https %s, got %q", flag, what, shown)
}

// parseSince reads --since: an RFC 3339 time, a date (UTC midnight), or
// a duration before now.
func parseSince(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since: want a time (2024-05-01T08:00:00Z), a date (2024-05-01) or a duration (48h), got %q", v)
}

// openDeadLetters opens the container with a connection string when one
// is given, else with the Azure credential.
func openDeadLetters(ro recoverFlags, e env, token func() (azcore.TokenCredential, error)) (*azure.DeadLetters, error) {
	if conn := ro.conn(e); conn != "" {
		d, err := azure.NewDeadLettersFromConnectionString(conn, ro.deadLetter, nil)
		if err != nil {
			return nil, usageError("%v", err)
		}
		return d, nil
	}
	cred, err := token()
	if err != nil {
		return nil, err
	}
	d, err := azure.NewDeadLetters(ro.deadLetter, cred, nil)
	if err != nil {
		return nil, usageError("%v", err)
	}
	return d, nil
}

func deadLetterCommand(ctx context.Context, ro recoverFlags, asJSON bool, e env) error {
	from, err := parseSince(ro.since, time.Now())
	if err != nil {
		return usageError("%v", err)
	}
	opts := azure.ReplayOptions{Since: from, DryRun: ro.dryRun, Again: ro.again}
	if isTerminal(e.stderr) {
		start := time.Now()
		opts.Progress = func(s azure.ReplaySummary) {
			fmt.Fprintf(e.stderr, "\r%d of %d blobs: %d done, %d left for later, %d events (%s)",
				s.TooOld+s.Done+s.Replayed+s.Unfinished, s.Blobs, s.Replayed, s.Unfinished, s.Events, since(start))
		}
	}

	var sum azure.ReplaySummary
	var runErr error
	if ro.republish != "" {
		s, err := loadSettings(e.getenv, false, false)
		if err != nil {
			return err
		}
		log := newLogger(textByDefault(s.LogFormat), s.LogLevel, e.stderr, e.stderr)
		opts.Logger = log
		token := lazyToken(s)
		d, err := openDeadLetters(ro, e, token)
		if err != nil {
			return err
		}
		c, err := publisher(ro.republish, e, token)
		if err != nil {
			return err
		}
		sum, runErr = d.Republish(ctx, c, opts)
	} else {
		a, log, err := cliAppWith(e, ro.dryRun)
		if err != nil {
			return err
		}
		opts.Logger = log
		d, err := openDeadLetters(ro, e, func() (azcore.TokenCredential, error) { return a.token, nil })
		if err != nil {
			return err
		}
		sum, runErr = d.Replay(ctx, a.rotator, opts)
	}
	if opts.Progress != nil {
		fmt.Fprintln(e.stderr)
	}

	if asJSON {
		writeJSONTo(e.stdout, sum)
	} else {
		printDeadLetters(e.stdout, ro, sum)
	}
	return deadLetterExit(sum, runErr)
}

// deadLetterExit: unfinished blobs or a failure to list, read or mark
// (all repeated by a later run) exit 3; blobs done with failed or
// undecodable events exit 1.
func deadLetterExit(sum azure.ReplaySummary, err error) error {
	if err != nil && sum.Blobs == 0 && len(sum.Results) == 0 {
		return failed(err)
	}
	if err != nil || sum.Unfinished > 0 {
		return &exitError{code: exitRetryable, err: errQuiet}
	}
	for _, r := range sum.Results {
		if r.Outcome == azure.OutcomeFailed || r.Outcome == azure.OutcomeUndecodable {
			return &exitError{code: exitFailed, err: errQuiet}
		}
	}
	return nil
}

func printDeadLetters(w io.Writer, ro recoverFlags, sum azure.ReplaySummary) {
	verb := "replayed"
	if ro.republish != "" {
		verb = "republished"
	}
	if ro.dryRun {
		verb += " (dry run: nothing marked)"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BLOB\tEVENTS\tRESULT")
	for _, r := range sum.Results {
		res := r.Outcome
		switch {
		case r.Error != "":
			res = "left for a later run: " + r.Error
		case res == "":
			res = "left for a later run: an event could still succeed"
		case r.Marked:
			res += ", marked"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", r.Name, len(r.Events)+r.Sent+r.Poison, res)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d blobs: %d %s, %d left for a later run, %d already done, %d before --since\n",
		sum.Blobs, sum.Replayed, verb, sum.Unfinished, sum.Done, sum.TooOld)
	if ro.republish != "" {
		fmt.Fprintf(w, "%d events, %d sent, %d undecodable\n", sum.Events, sum.Sent, sum.Poison)
		return
	}
	fmt.Fprintf(w, "%d events, %d undecodable\n", sum.Events, sum.Poison)
	for _, rep := range rotation.Reports(blobEvents(sum)) {
		fmt.Fprintln(w)
		printReport(w, rep)
	}
}

func blobEvents(sum azure.ReplaySummary) []rotation.EventResult {
	var out []rotation.EventResult
	for _, r := range sum.Results {
		out = append(out, r.Events...)
	}
	return out
}

// RepublishFileResult is what replay --republish ENDPOINT FILE --json
// prints.
type RepublishFileResult struct {
	File     string `json:"file"`
	Endpoint string `json:"endpoint"`
	DryRun   bool   `json:"dryRun"`
	azure.RepublishResult
	Error string `json:"error,omitempty"` // Event Grid refused a request; Sent says how many went before (the text output has it on stderr)
}

func republishFileCommand(ctx context.Context, ro recoverFlags, data []byte, name string, asJSON bool, e env) error {
	s, err := loadSettings(e.getenv, false, false)
	if err != nil {
		return err
	}
	log := newLogger(textByDefault(s.LogFormat), s.LogLevel, e.stderr, e.stderr)
	c, err := publisher(ro.republish, e, lazyToken(s))
	if err != nil {
		return err
	}
	res, err := azure.Republish(ctx, c, data, &azure.RepublishOptions{DryRun: ro.dryRun, Logger: log})
	switch {
	case errors.Is(err, azure.ErrNotEvents), errors.Is(err, azure.ErrMixedSchemas):
		// Nothing was sent, and a later run could not send more.
		return usageError("republish events from %s: %s", name, strings.TrimPrefix(err.Error(), "decode saved events: "))
	case err == nil && res.Events == 0:
		return usageError("no events in %s", name)
	case err == nil && res.Sent == 0:
		return usageError("republish events from %s: no event can be sent: %s", name, res.Undecodable[0].Reason)
	}

	out := RepublishFileResult{File: name, Endpoint: ro.republish, DryRun: ro.dryRun, RepublishResult: res}
	if err != nil {
		out.Error = err.Error()
	}
	if asJSON {
		writeJSONTo(e.stdout, out)
	} else {
		printRepublishFile(e.stdout, out)
	}
	switch {
	case err != nil:
		return failed(err)
	case len(res.Undecodable) > 0:
		return &exitError{code: exitFailed, err: errQuiet}
	}
	return nil
}

func printRepublishFile(w io.Writer, r RepublishFileResult) {
	verb := "sent"
	if r.DryRun {
		verb = "dry run: would send"
	}
	fmt.Fprintf(w, "%s %s of %d from %s to %s", verb, plural(r.Sent, "event"), r.Events, r.File, r.Endpoint)
	if r.Schema != "" {
		fmt.Fprintf(w, " (%s schema)", r.Schema)
	}
	fmt.Fprintln(w)
	for _, u := range r.Undecodable {
		id := u.ID
		if id == "" {
			id = "-"
		}
		fmt.Fprintf(w, "  not sent: event %d (id %s): %s\n", u.Index, id, u.Reason)
	}
}

// publisher returns an Event Grid client for a custom topic endpoint,
// with the topic key of EVENTGRID_KEY or else the Azure credential.
func publisher(endpoint string, e env, token func() (azcore.TokenCredential, error)) (*azeventgrid.Client, error) {
	if err := wantHTTPS("--republish", "topic endpoint", endpoint); err != nil {
		return nil, err
	}
	if key := strings.TrimSpace(e.getenv("EVENTGRID_KEY")); key != "" {
		c, err := azeventgrid.NewClientWithSharedKeyCredential(endpoint, azcore.NewKeyCredential(key), nil)
		if err != nil {
			return nil, fmt.Errorf("create Event Grid publisher: %w", err)
		}
		return c, nil
	}
	cred, err := token()
	if err != nil {
		return nil, err
	}
	c, err := azeventgrid.NewClient(endpoint, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("create Event Grid publisher: %w", err)
	}
	return c, nil
}

// lazyToken builds the Azure credential on first need only.
func lazyToken(s Settings) func() (azcore.TokenCredential, error) {
	return func() (azcore.TokenCredential, error) {
		cred, _, err := newCredential(s, azcore.ClientOptions{})
		return cred, err
	}
}

func textByDefault(format string) string {
	if format == "" {
		return "text"
	}
	return format
}

func pullCommand(ctx context.Context, args []string, e env) error {
	fs := newFlags("pull", "usage: cmkrotator pull [flags]\n\n"+
		"Receives Key Vault events from an Event Grid namespace topic subscription and\n"+
		"rotates for them: events that ended final are acknowledged, those a later\n"+
		"attempt could finish are released with a delay, undecodable ones are\n"+
		"rejected (dead-lettered). Runs until interrupted; --once drains and exits.\n"+
		"--dry-run receives what is waiting once, decides and reports, and releases\n"+
		"every event at once without delay: nothing is PATCHed and nothing consumed.\n"+
		"Authenticates with $EVENTGRID_KEY when set, else the Azure credential.", e)
	endpoint := fs.String("endpoint", e.getenv("EVENTGRID_NAMESPACE_ENDPOINT"),
		"namespace endpoint, https://{namespace}.{region}-1.eventgrid.azure.net (default $EVENTGRID_NAMESPACE_ENDPOINT)")
	topic := fs.String("topic", e.getenv("EVENTGRID_TOPIC"), "namespace topic (default $EVENTGRID_TOPIC)")
	sub := fs.String("subscription", e.getenv("EVENTGRID_SUBSCRIPTION"), "queue subscription (default $EVENTGRID_SUBSCRIPTION)")
	once := fs.Bool("once", false, "drain the subscription and exit (for cron and tests)")
	maxEvents := fs.Int("max-events", 20, "events per receive, 1-100")
	maxWait := fs.Duration("max-wait", time.Minute, "how long one receive waits for events, 10s-2m")
	renew := fs.Duration("renew-every", 20*time.Second, "renew locks this often while events are worked on (under the lock duration)")
	dryRun := fs.Bool("dry-run", false, "receive what is waiting once, decide and report, PATCH nothing, and release every event without delay (nothing consumed)")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usageError("pull takes no arguments, got %s", quoted(pos))
	case !strings.HasPrefix(*endpoint, "https://"):
		return usageError("pull: want --endpoint https://…, got %q", *endpoint)
	case *topic == "" || *sub == "":
		return usageError("pull: --topic and --subscription are required")
	case *maxEvents < 1 || *maxEvents > 100:
		return usageError("pull: --max-events: want 1 to 100, got %d", *maxEvents)
	case *maxWait < 10*time.Second || *maxWait > 2*time.Minute:
		return usageError("pull: --max-wait: want 10s to 2m, got %s", *maxWait)
	case *renew <= 0:
		return usageError("pull: --renew-every: want a positive duration")
	}

	a, log, err := cliAppWith(e, *dryRun)
	if err != nil {
		return err
	}
	var r *aznamespaces.ReceiverClient
	if key := strings.TrimSpace(e.getenv("EVENTGRID_KEY")); key != "" {
		r, err = aznamespaces.NewReceiverClientWithSharedKeyCredential(*endpoint, *topic, *sub, azcore.NewKeyCredential(key), nil)
	} else {
		r, err = aznamespaces.NewReceiverClient(*endpoint, *topic, *sub, a.token, nil)
	}
	if err != nil {
		return fmt.Errorf("create Event Grid receiver: %w", err)
	}

	log.Info("pulling", "endpoint", *endpoint, "topic", *topic, "subscription", *sub, "once", *once, "dry_run", *dryRun)
	var results []rotation.EventResult
	sum, err := azure.Pull(ctx, r, a.rotator, azure.PullOptions{MaxEvents: *maxEvents, MaxWait: *maxWait,
		RenewEvery: *renew, Once: *once, DryRun: *dryRun, Logger: log,
		Results: func(rs []rotation.EventResult) { results = append(results, rs...) }})
	if *dryRun {
		return dryPullDone(e, sum, results, err, *asJSON)
	}
	if *asJSON {
		writeJSONTo(e.stdout, sum)
	} else {
		fmt.Fprintf(e.stdout, "received %d events: %d acknowledged (%d of them failed for good), %d released for a later attempt, "+
			"%d rejected as undecodable, %d refused because the lock was lost, %d not settled (redelivered when their locks expire)\n",
			sum.Received, sum.Acknowledged, sum.Failed, sum.Released, sum.Rejected, sum.LostLocks, sum.Unsettled)
	}
	switch {
	case err != nil:
		return failed(err)
	case sum.Released > 0 || sum.LostLocks > 0 || sum.Unsettled > 0:
		return &exitError{code: exitRetryable, err: errQuiet}
	case sum.Failed > 0 || sum.Rejected > 0:
		return &exitError{code: exitFailed, err: errQuiet}
	}
	return nil
}

func reconcileCommand(ctx context.Context, args []string, e env) error {
	fs := newFlags("reconcile", "usage: cmkrotator reconcile [flags]\n\n"+
		"Brings every server of every subscribed key to the key's current version,\n"+
		"as the Reconcile timer does: catches missed events and a deployment that\n"+
		"wrote an old version back. Reports what it moved and the drift it could\n"+
		"not fix.", e)
	dryRun := fs.Bool("dry-run", false, "decide and report, write nothing")
	asJSON := fs.Bool("json", false, "print the reports as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("reconcile takes no arguments, got %s", quoted(pos))
	}
	a, _, err := cliAppWith(e, *dryRun)
	if err != nil {
		return err
	}
	reps := a.rotator.Reconcile(ctx)
	if reps == nil {
		reps = []rotation.Report{}
	}
	if *asJSON {
		writeJSONTo(e.stdout, ReconcileResult{Reports: reps, Drift: drift(reps)})
	} else {
		printReconcile(e.stdout, reps)
	}
	return reconcileExit(reps)
}

// reconcileExit: drift a person must sort out (a failure for good, a
// server on another key) exits 1, even beside failures a later run could
// fix; else those exit 3; else 0.
func reconcileExit(reps []rotation.Report) error {
	for _, d := range drift(reps) {
		if !d.Retryable {
			return &exitError{code: exitFailed, err: errQuiet}
		}
	}
	return reportsExit(reps)
}

// ReconcileResult is what cmkrotator reconcile --json prints.
type ReconcileResult struct {
	Reports []rotation.Report `json:"reports"`
	Drift   []Drift           `json:"drift"` // what reconcile could not fix
}

// Drift is a server (or a whole key) reconcile could not bring to the
// key's current version.
type Drift struct {
	Key       string `json:"key"`
	Server    string `json:"server,omitempty"`
	Version   string `json:"version,omitempty"`
	Reason    string `json:"reason"`
	Retryable bool   `json:"retryable,omitempty"`
}

// drift lists key errors, failed servers and servers on another key.
func drift(reps []rotation.Report) []Drift {
	out := []Drift{}
	for _, rep := range reps {
		if rep.Error != "" {
			out = append(out, Drift{Key: rep.Key, Reason: rep.Error, Retryable: rep.Retryable})
		}
		for _, s := range rep.Servers {
			if s.Outcome == rotation.Failed || strings.HasPrefix(s.Reason, rotation.ReasonMismatch) {
				reason := s.Reason
				if s.Reason == rotation.ReasonPreviousGone {
					reason = "the server's version " + s.PreviousVersion + " no longer exists in the key vault " +
						"(key deleted or recreated); a person must restore it before the server can be moved"
				}
				out = append(out, Drift{Key: rep.Key, Server: s.ID, Version: s.PreviousVersion,
					Reason: reason, Retryable: s.Retryable})
			}
		}
	}
	return out
}

func printReconcile(w io.Writer, reps []rotation.Report) {
	var errs errorCells
	moved, current, dryRun := 0, 0, false
	for i, rep := range reps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		printReportCells(w, rep, &errs)
		dryRun = dryRun || rep.DryRun
		for _, s := range rep.Servers {
			switch {
			case s.Outcome == rotation.Rotated, s.WouldPatch:
				moved++
			case s.Outcome == rotation.Current:
				current++
			}
		}
	}
	if dryRun {
		fmt.Fprintf(w, "\nreconcile (dry run, nothing changed): %s, %s would move to the current version, %d already current\n",
			plural(len(reps), "key"), plural(moved, "server"), current)
	} else {
		fmt.Fprintf(w, "\nreconcile: %s, %s moved to the current version, %d already current\n",
			plural(len(reps), "key"), plural(moved, "server"), current)
	}
	d := drift(reps)
	switch {
	case len(d) == 0 && dryRun:
		fmt.Fprintln(w, "no drift that a real run would leave")
		errs.note(w, "cmkrotator reconcile")
		return
	case len(d) == 0:
		fmt.Fprintln(w, "no drift left")
		errs.note(w, "cmkrotator reconcile")
		return
	}
	fmt.Fprintf(w, "drift not fixed (%d):\n", len(d))
	for _, x := range d {
		who := x.Key
		if x.Server != "" {
			who = shortID(x.Server)
		}
		retry := ""
		if x.Retryable {
			retry = " (a later run may fix it)"
		}
		fmt.Fprintf(w, "  %s: %s%s\n", who, errs.line(x.Reason, x.Server), retry)
	}
	errs.note(w, "cmkrotator reconcile")
}
