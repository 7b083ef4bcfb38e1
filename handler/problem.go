package handler

import (
	"net/http"
)

// Problem is an RFC 9457 problem details body, answered with
// Content-Type application/problem+json for requests the API refuses.
type Problem struct {
	Type     string `json:"type"`   // a URI naming the kind of problem; "about:blank" when the status says it all
	Title    string `json:"title"`  // short, the same for every occurrence of the type
	Status   int    `json:"status"` // the HTTP status, repeated
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"` // the request path
}

// Problem types this API uses. They are stable identifiers, not links.
const (
	problemBadJSON     = "urn:cmkrotator:problem:bad-json"     // not one JSON value
	problemInvalidBody = "urn:cmkrotator:problem:invalid-body" // JSON, but not the request's shape
	problemBadRequest  = "urn:cmkrotator:problem:bad-request"
	problemTooLarge    = "urn:cmkrotator:problem:too-large"
	problemMediaType   = "urn:cmkrotator:problem:unsupported-media-type"
	problemUnknownKey  = "urn:cmkrotator:problem:unknown-key"
	problemMethod      = "urn:cmkrotator:problem:method-not-allowed"
	problemNotFound    = "urn:cmkrotator:problem:not-found"
)

func writeProblem(w http.ResponseWriter, r *http.Request, status int, typ, title, detail string) {
	writeProblemAt(w, r.URL.Path, status, typ, title, detail)
}

// writeProblemAt is writeProblem for the request path instance.
func writeProblemAt(w http.ResponseWriter, instance string, status int, typ, title, detail string) {
	writeJSON(w, status, "application/problem+json", Problem{
		Type:     typ,
		Title:    title,
		Status:   status,
		Detail:   detail,
		Instance: instance,
	})
}
