package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// maxReplayFile bounds what replay reads: a day of dead-lettered events
// for a handful of keys is far smaller.
const maxReplayFile = 256 << 20

// cliApp loads settings and builds the app for a one-shot command,
// logging as text to stderr unless LOG_FORMAT says otherwise.
func cliApp(e env) (*app, *slog.Logger, error) {
	return cliAppWith(e, false)
}

// cliAppWith is cliApp; dryRun makes the rotator decide and report only,
// whatever ROTATION_DRY_RUN says.
func cliAppWith(e env, dryRun bool) (*app, *slog.Logger, error) {
	s, err := loadSettings(e.getenv, true, false)
	if err != nil {
		return nil, nil, err
	}
	s.DryRun = s.DryRun || dryRun
	if s.LogFormat == "" {
		s.LogFormat = "text"
	}
	log := newLogger(s.LogFormat, s.LogLevel, e.stderr, e.stderr)
	a, err := newApp(s, azcore.ClientOptions{}, log)
	return a, log, err
}

func rotateCommand(ctx context.Context, args []string, e env) error {
	fs := newFlags("rotate", "usage: cmkrotator rotate [flags] KEY_URL\n\n"+
		"Rotates every server the subscription map lists for the key. A versionless\n"+
		"KEY_URL rotates to the key's current version; a versioned one to exactly\n"+
		"that version.", e)
	dryRun := fs.Bool("dry-run", false, "decide and report, write nothing")
	allowOlder := fs.Bool("allow-older", false, "allow moving a server to an older version")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("rotate takes one key URL, got %s", quoted(pos))
	}
	ref, err := rotation.ParseKeyURL(pos[0])
	if err != nil {
		return usageError("%v", err)
	}

	a, _, err := cliApp(e)
	if err != nil {
		return err
	}
	if _, ok := a.targets.Lookup(ref); !ok {
		return usageError("%s is not in the subscription map", ref.Versionless())
	}
	rep := a.rotator.Rotate(ctx, rotation.Request{Key: ref, DryRun: *dryRun, AllowOlder: *allowOlder, Manual: true})
	if *asJSON {
		writeJSONTo(e.stdout, rep)
	} else {
		printReport(e.stdout, rep)
	}
	return reportsExit([]rotation.Report{rep})
}

func replayCommand(ctx context.Context, args []string, e env) error {
	fs := newFlags("replay", "usage: cmkrotator replay [flags] [FILE|-]\n"+
		"       cmkrotator replay --dead-letter CONTAINER_URL[/PREFIX] [flags]\n\n"+
		"Processes saved Key Vault events, e.g. an Event Grid dead-letter blob: one\n"+
		"event or a JSON array, either schema, from FILE or standard input; or every\n"+
		"dead-letter blob under a container URL and prefix, marking each blob done\n"+
		"(metadata cmkrotator_replayed) once every event in it ended final, so that a\n"+
		"second run repeats only what is unfinished. With --republish the events are\n"+
		"sent to an Event Grid custom topic instead of rotated here.", e)
	asJSON := fs.Bool("json", false, "print the results as JSON")
	var ro recoverFlags
	ro.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := ro.check(e); err != nil {
		return err
	}
	if ro.deadLetter != "" {
		if len(pos) > 0 {
			return usageError("replay --dead-letter takes no file, got %s", quoted(pos))
		}
		return deadLetterCommand(ctx, ro, *asJSON, e)
	}
	if len(pos) > 1 {
		return usageError("replay takes at most one file, got %s", quoted(pos))
	}
	if ro.since != "" || ro.again {
		return usageError("--since and --again apply to --dead-letter only")
	}

	in, name := e.stdin, "standard input"
	if len(pos) == 1 && pos[0] != "-" {
		p := pos[0]
		f, err := os.Open(p)
		if err != nil {
			return usageError("open events: %v", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			return usageError("replay: %s is a directory; want a file of events, or - for standard input", p)
		}
		in, name = f, p
	}
	data, err := io.ReadAll(io.LimitReader(in, maxReplayFile+1))
	if err != nil {
		return fmt.Errorf("read events from %s: %w", name, err)
	}
	if len(data) > maxReplayFile {
		return usageError("read events from %s: more than %d bytes", name, maxReplayFile)
	}
	if ro.republish != "" {
		return republishFileCommand(ctx, ro, data, name, *asJSON, e)
	}
	b, err := rotation.DecodeBatch(data)
	switch {
	case err != nil:
		// DecodeBatch's errors begin with the step this one names.
		return usageError("decode events from %s: %s", name, strings.TrimPrefix(err.Error(), "decode events: "))
	case b.Size == 0:
		return usageError("no events in %s", name)
	case len(b.Events) == 0:
		return usageError("decode events from %s: no event decodes: %v", name, b.Bad[0].Err)
	}
	events := b.Events

	a, _, err := cliAppWith(e, ro.dryRun)
	if err != nil {
		return err
	}
	progress := isTerminal(e.stderr) && len(events) > azure.ReplayBatch
	var results []rotation.EventResult
	start := time.Now()
	for i := 0; i < len(events); i += azure.ReplayBatch {
		batch := events[i:min(i+azure.ReplayBatch, len(events))]
		results = append(results, a.rotator.HandleEvents(ctx, batch)...)
		if progress {
			fmt.Fprintf(e.stderr, "\rreplayed %d of %d events (%s)", len(results), len(events), since(start))
		}
	}
	if progress {
		fmt.Fprintln(e.stderr)
	}

	all := b.Results(results)
	if *asJSON {
		writeJSONTo(e.stdout, handler.ReplayResponse{Results: all})
	} else {
		printEvents(e.stdout, all)
	}
	err = reportsExit(rotation.Reports(results))
	if err == nil && len(b.Bad) > 0 {
		return &exitError{code: exitFailed, err: errQuiet}
	}
	return err
}

func statusCommand(ctx context.Context, args []string, e env) error {
	fs := newFlagsExits("status", "usage: cmkrotator status [--json]\n\n"+
		"Shows, per subscribed key, its current version, each server's version and\n"+
		"state, and which older versions no server uses (safe to disable). Prints a\n"+
		"table; --json prints JSON instead (what GET /api/status answers), for scripts.", statusExitRule, e)
	asJSON := fs.Bool("json", false, "print JSON (as GET /api/status answers) instead of a table")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("status takes no arguments, got %s", quoted(pos))
	}
	a, _, err := cliApp(e)
	if err != nil {
		return err
	}
	// The table says what the credential check found; a log line would
	// say it again.
	cred := a.cred.check(ctx)
	resp := handler.StatusResponse{Credential: &cred, Status: a.rotator.Status(ctx)}
	if *asJSON {
		writeJSONTo(e.stdout, resp)
	} else {
		printStatus(e.stdout, resp)
	}
	if code := statusExit(resp); code != exitOK {
		return &exitError{code: code, err: errQuiet}
	}
	return nil
}

// statusExitRule is how status chooses its exit code; status --help
// prints it.
const statusExitRule = `Exit codes: 0 every server current, lagging, ahead or versionless;
1 something needs a person: a key error that is not retryable, or a server
gone, disabled, expired, not-found, mismatch, no-cmk, or unsettled with a
failed update; 3 only problems a later run may clear: a refused credential,
unreachable servers (e.g. throttled reads), a retryable key error, an
update still in flight; 2 bad usage or settings.`

// statusExit applies statusExitRule: exitFailed when anything needs a
// person, else exitRetryable when anything failed that may clear, else
// exitOK.
func statusExit(st handler.StatusResponse) int {
	person, retry := false, st.Credential != nil && !st.Credential.OK
	for _, k := range st.Keys {
		switch {
		case k.Error == "":
		case k.Retryable:
			retry = true
		default:
			person = true
		}
		for _, s := range k.Servers {
			switch s.State {
			case rotation.StateCurrent, rotation.StateLagging, rotation.StateAhead, rotation.StateVersionless:
			case rotation.StateUnreachable, rotation.StateUnsettled:
				if s.Retryable {
					retry = true
				} else {
					person = true
				}
			default: // gone, disabled, expired, not-found, mismatch, no-cmk, and any state unknown here
				person = true
			}
		}
	}
	switch {
	case person:
		return exitFailed
	case retry:
		return exitRetryable
	}
	return exitOK
}

// reportsExit maps reports to the exit codes: exitFailed when anything
// needs a person, even if other failures may clear; exitRetryable when
// running again later could finish everything; exitOK otherwise.
func reportsExit(reps []rotation.Report) error {
	code := exitOK
	for _, r := range reps {
		switch {
		case r.OK():
		case r.Retryable:
			code = max(code, exitRetryable)
		default:
			return &exitError{code: exitFailed, err: errQuiet}
		}
	}
	if code != exitOK {
		return &exitError{code: code, err: errQuiet}
	}
	return nil
}

func writeJSONTo(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// shortID shortens a server's ARM ID to resourceGroup/name for tables.
func shortID(id string) string {
	parts := strings.Split(strings.Trim(id, "/"), "/")
	if len(parts) >= 8 && strings.EqualFold(parts[2], "resourceGroups") {
		return parts[3] + "/" + parts[len(parts)-1]
	}
	return id
}

func short(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	if v == "" {
		return "-"
	}
	return v
}

// plural is n and noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// errorCells keeps every error in a table cell or line to one line: the
// first line of the error, trimmed, without the server ID its row already
// names. In tables (cell), a server's error that an earlier row showed
// for another server is named by that row. When it cut an error short, a
// note says where to read it whole.
type errorCells struct {
	cut  bool
	seen map[string]string // server error → the ID of the server whose row showed it
}

// cell is msg for a table row of serverID ("" for a key's error).
func (c *errorCells) cell(msg, serverID string) string {
	first := c.line(msg, serverID)
	if serverID == "" || first == "" {
		return first
	}
	if id, ok := c.seen[first]; ok && !strings.EqualFold(id, serverID) {
		return "same error as " + shortID(id)
	}
	if c.seen == nil {
		c.seen = map[string]string{}
	}
	c.seen[first] = serverID
	return first
}

// line is msg's first line, without serverID, never shortened to a
// reference to another row.
func (c *errorCells) line(msg, serverID string) string {
	first, rest, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	if strings.TrimSpace(rest) != "" {
		c.cut = true
	}
	if serverID != "" {
		first = withoutID(first, serverID)
	}
	return strings.TrimSpace(first)
}

// withoutID removes id from msg, with the word that joined it to its
// operation (" of ID", " in ID", " ID"), and a step of msg that then
// repeats the one before it: "update key URL: update key URL of ID:
// throttled" becomes "update key URL: throttled".
func withoutID(msg, id string) string {
	for _, s := range []string{" of " + id, " in " + id, " " + id} {
		msg = strings.ReplaceAll(msg, s, "")
	}
	steps := strings.Split(msg, ": ")
	out := steps[:1]
	for _, s := range steps[1:] {
		if !strings.EqualFold(strings.TrimSpace(s), strings.TrimSpace(out[len(out)-1])) {
			out = append(out, s)
		}
	}
	return strings.Join(out, ": ")
}

// note tells, once, that errors were cut and how to see them whole.
func (c *errorCells) note(w io.Writer, command string) {
	if c.cut {
		fmt.Fprintf(w, "\n(errors cut to their first line; %s --json prints them whole)\n", command)
	}
}

func printReport(w io.Writer, rep rotation.Report) {
	var errs errorCells
	printReportCells(w, rep, &errs)
	errs.note(w, "the command with")
}

// wouldMoveLegend explains a dry run's "would move": the report (and
// its JSON) says the server was skipped, having been left alone, with
// wouldPatch set.
const wouldMoveLegend = `  would move: left alone by the dry run; a real run moves it to WOULD MOVE TO` +
	` (JSON: outcome skipped, wouldPatch true)`

// printReportCells writes one report; a dry run shows each server's
// version as it is and, apart, the version it would move to, with a
// legend when a server would move.
func printReportCells(w io.Writer, rep rotation.Report, errs *errorCells) {
	fmt.Fprintf(w, "key %s", rep.Key)
	switch {
	case rep.TargetVersion != "" && rep.DryRun:
		fmt.Fprintf(w, " -> version %s (dry run: nothing changed)", rep.TargetVersion)
	case rep.TargetVersion != "":
		fmt.Fprintf(w, " -> version %s", rep.TargetVersion)
	case rep.DryRun:
		fmt.Fprint(w, " (dry run: nothing changed)")
	}
	fmt.Fprintln(w)
	if rep.Error != "" {
		fmt.Fprintf(w, "  error: %s (retryable: %t)\n", errs.cell(rep.Error, ""), rep.Retryable)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if len(rep.Servers) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if rep.DryRun {
		fmt.Fprintln(tw, "  SERVER\tOUTCOME\tVERSION\tWOULD MOVE TO\tREASON")
	} else {
		fmt.Fprintln(tw, "  SERVER\tOUTCOME\tFROM\tNOW\tREASON")
	}
	for _, s := range rep.Servers {
		outcome, reason := string(s.Outcome), s.Reason
		if s.Outcome == rotation.Failed && s.Retryable {
			outcome += " (retryable)"
		}
		if s.Outcome == rotation.Failed {
			reason = errs.cell(reason, s.ID)
		}
		if !rep.DryRun {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", shortID(s.ID), outcome, short(s.PreviousVersion), short(s.Version), reason)
			continue
		}
		would := "-"
		if s.WouldPatch {
			outcome, would = "would move", short(s.Version)
			if reason = strings.TrimPrefix(reason, "dry run: would "); strings.HasPrefix(reason, "rotate from ") {
				reason = "" // the version columns say it
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", shortID(s.ID), outcome, short(s.PreviousVersion), would, reason)
	}
	tw.Flush()
	for _, s := range rep.Servers {
		if rep.DryRun && s.WouldPatch {
			fmt.Fprintln(w, wouldMoveLegend)
			break
		}
	}
}

// printEvents writes one row per event, numbered from 0 as in the file,
// then the report of each key.
func printEvents(w io.Writer, results []rotation.EventResult) {
	var errs errorCells
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tEVENT\tTYPE\tKEY\tRESULT")
	printed := map[*rotation.Report]bool{}
	var reports []*rotation.Report
	undecodable := 0
	for i, r := range results {
		res := r.Ignored
		switch {
		case r.Report != nil && r.Report.OK():
			res = "ok"
		case r.Report != nil && r.Report.Retryable:
			res = "failed, retry later"
		case r.Report != nil && !r.Report.Final():
			res = "failed; some servers may clear on a retry"
		case r.Report != nil:
			res = "failed"
		case strings.HasPrefix(res, rotation.IgnoredUndecodable):
			undecodable++
			res = errs.cell(res, "")
		}
		typ := strings.TrimPrefix(r.Type, "Microsoft.KeyVault.")
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i, orDash(r.EventID), orDash(typ), orDash(r.Key), res)
		if r.Report != nil && !printed[r.Report] {
			printed[r.Report] = true
			reports = append(reports, r.Report)
		}
	}
	tw.Flush()
	if undecodable > 0 {
		fmt.Fprintf(w, "%s undecodable, not processed\n", plural(undecodable, "event"))
	}
	for _, rep := range reports {
		fmt.Fprintln(w)
		printReportCells(w, *rep, &errs)
	}
	errs.note(w, "the command with")
}

func orDash(v string) string {
	if v == "" {
		return "-"
	}
	return v
}

func printStatus(w io.Writer, st handler.StatusResponse) {
	var errs errorCells
	switch c := st.Credential; {
	case c == nil || c.OK:
	case c.Unreachable:
		fmt.Fprintf(w, "credential check failed: %s\n\n", c.Error)
	default:
		fmt.Fprintf(w, "credential refused: %s\n\n", c.Error)
	}
	for i, k := range st.Keys {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "key %s  current %s\n", k.Key, short(k.CurrentVersion))
		if k.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", errs.cell(k.Error, ""))
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SERVER\tVERSION\tSTATE\tERROR")
		for _, s := range k.Servers {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", shortID(s.ID), short(s.Version), s.State, errs.cell(s.Error, s.ID))
		}
		tw.Flush()
		if len(k.SafeToDisable) > 0 {
			fmt.Fprintf(w, "  safe to disable: %s\n", strings.Join(k.SafeToDisable, ", "))
		}
	}
	errs.note(w, "cmkrotator status")
}
