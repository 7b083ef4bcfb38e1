package rotation

import "time"

// Outcome is how one server ended.
type Outcome string

const (
	Rotated Outcome = "rotated" // PATCHed and confirmed by a GET
	Current Outcome = "current" // already on the target; nothing written
	Skipped Outcome = "skipped" // deliberately left alone; Reason says why
	Failed  Outcome = "failed"  // could not be brought to the target
)

// ServerResult is the outcome for one server of one rotation.
type ServerResult struct {
	ID              string  `json:"id"`
	Outcome         Outcome `json:"outcome"`
	Reason          string  `json:"reason,omitempty"`
	PreviousVersion string  `json:"previousVersion,omitempty"`
	Version         string  `json:"version,omitempty"` // the version the server is on now (or would be, in a dry run)
	Retryable       bool    `json:"retryable,omitempty"`
	WouldPatch      bool    `json:"wouldPatch,omitempty"` // dry run: a PATCH would have been sent
}

// Report is the result of rotating one key.
type Report struct {
	Key           string         `json:"key"` // versionless key URL
	TargetVersion string         `json:"targetVersion,omitempty"`
	DryRun        bool           `json:"dryRun,omitempty"`
	Servers       []ServerResult `json:"servers"`

	// Error is set when the key itself could not be handled (not
	// subscribed, target invalid, vault unreachable); then Servers may be
	// empty. ErrorKind classifies it.
	Error     string    `json:"error,omitempty"`
	ErrorKind ErrorKind `json:"errorKind,omitempty"`

	// Retryable says whether a retry could finish everything this
	// report left unfinished without a person. With Error set, it is
	// whether that error may clear. Without Error, it is true when some
	// server failed retryably and none failed for good; a report with
	// both is not Retryable, though not Final either: a retry would move
	// some servers, and a person is still needed for the others.
	Retryable bool `json:"retryable"`

	// Notes tell a person what the rotation did other than asked,
	// though nothing failed: an event's version that Key Vault does not
	// know, so that the target is the current version instead. Nil when
	// there is nothing to tell.
	Notes []string `json:"notes,omitempty"`

	// RetryAfter is how long Azure asked the caller to wait before trying
	// again, when it did; zero otherwise.
	RetryAfter time.Duration `json:"-"`
}

// ErrorKind classifies a key-level error in a Report.
type ErrorKind string

const (
	KindNotSubscribed ErrorKind = "not-subscribed" // the key is not in the map; nothing was called
	KindNotFound      ErrorKind = "not-found"      // Key Vault has no such key or version
	KindInvalidTarget ErrorKind = "invalid-target" // the target version cannot protect a server
	KindUpstream      ErrorKind = "upstream"       // Key Vault failed or answered unexpectedly
	KindBusy          ErrorKind = "busy"           // gave up waiting for a rotation in progress
)

// Final reports whether nothing in the report could succeed on a retry
// that has not already succeeded: a key error that is not retryable, or
// no key error and no retryable server failure.
func (r Report) Final() bool {
	if r.Error != "" {
		return !r.Retryable
	}
	for _, s := range r.Servers {
		if s.Outcome == Failed && s.Retryable {
			return false
		}
	}
	return true
}

// finishable reports whether a retry could finish everything the
// servers left: some server failed retryably, and none for good.
func (r Report) finishable() bool {
	retry := false
	for _, s := range r.Servers {
		if s.Outcome == Failed && !s.Retryable {
			return false
		}
		retry = retry || s.Outcome == Failed
	}
	return retry
}

// OK reports whether every server ended rotated, current or skipped and
// the key itself raised no error.
func (r Report) OK() bool {
	if r.Error != "" {
		return false
	}
	for _, s := range r.Servers {
		if s.Outcome == Failed {
			return false
		}
	}
	return true
}
