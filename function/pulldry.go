package main

import (
	"fmt"
	"io"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// DryPullResult is what cmkrotator pull --dry-run --json prints.
type DryPullResult struct {
	DryRun      bool                   `json:"dryRun"`
	Received    int                    `json:"received"`
	Released    int                    `json:"released"`    // released at once, without delay
	LostLocks   int                    `json:"lostLocks"`   // locks that expired first; those events are available again anyway
	Unsettled   int                    `json:"unsettled"`   // not released (Event Grid failed): available again when their locks expire
	Undecodable int                    `json:"undecodable"` // a real pull would reject (dead-letter) them
	Results     []rotation.EventResult `json:"results"`
}

// dryPullDone prints a dry-run pull and chooses its exit: what the
// decisions call for, with undecodable events counting as failed.
func dryPullDone(e env, sum azure.PullSummary, results []rotation.EventResult, err error, asJSON bool) error {
	res := DryPullResult{DryRun: true, Received: sum.Received, Released: sum.Released,
		LostLocks: sum.LostLocks, Unsettled: sum.Unsettled, Undecodable: sum.Undecodable, Results: results}
	if res.Results == nil {
		res.Results = []rotation.EventResult{}
	}
	if asJSON {
		writeJSONTo(e.stdout, res)
	} else {
		printDryPull(e.stdout, res)
	}
	switch {
	case err != nil:
		return failed(err)
	case res.Undecodable > 0:
		if rerr := reportsExit(rotation.Reports(res.Results)); rerr != nil {
			return rerr
		}
		return &exitError{code: exitFailed, err: errQuiet}
	}
	return reportsExit(rotation.Reports(res.Results))
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
	if res.Unsettled > 0 {
		fmt.Fprintf(w, "; %d not released (available again when their locks expire)", res.Unsettled)
	}
	if res.Undecodable > 0 {
		fmt.Fprintf(w, "; %d undecodable (a pull would reject them)", res.Undecodable)
	}
	fmt.Fprintln(w)
}
