package chaos_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/internal/testenv"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// check asserts the guarantees over what the emulator recorded, what the
// product saw, and what it logged. Every assertion evaluated counts in
// s.checks.
func (s *scenario) check(t *testing.T) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("seed %d: "+format, append([]any{s.seed}, args...)...)
	}
	ok := func(cond bool, format string, args ...any) {
		t.Helper()
		s.checks++
		if !cond {
			fail(format, args...)
		}
	}
	byID := map[string]*server{}
	for _, srv := range s.servers {
		byID[strings.ToLower(srv.id)] = srv
	}

	// Event Grid got a 2xx for every event in the end.
	ok(len(s.undelivered) == 0, "got %d deliveries never answered 2xx, want none: %q", len(s.undelivered), s.undelivered)

	// Every subscribed, pinned server is on its key's newest valid version
	// (the last created); every other server is where it started.
	for _, srv := range s.servers {
		got, _ := s.emu.ServerKeyURL(srv.id)
		want := srv.initial
		if srv.rotates {
			want = srv.key.versions[len(srv.key.versions)-1].KID
		}
		ok(got == want, "%s: got key URL %s, want %s", srv.id, got, want)
	}

	// Successful PATCHes, in the order Resource Manager applied them.
	state := map[string]string{} // server → key URL
	for _, srv := range s.servers {
		state[strings.ToLower(srv.id)] = srv.initial
	}
	for _, r := range s.emu.Requests() {
		if r.Service == "keyvault" {
			ok(!strings.EqualFold(r.Host, strings.TrimPrefix(s.other.URL(), "https://")),
				"got %s %s on the unsubscribed vault, want no call", r.Method, r.Path)
		}
		if r.Service != "arm" || r.Method != http.MethodPatch || r.Status != http.StatusOK {
			continue
		}
		s.patches++
		id := strings.ToLower(r.Path)
		srv := byID[id]
		url, _ := testenv.KeyURL(r.Body)
		ok(srv != nil && srv.rotates, "PATCH of %s, want none: it is not a pinned subscribed server", r.Path)
		if srv == nil {
			continue
		}
		ref, err := rotation.ParseKeyURL(url)
		from, _ := rotation.ParseKeyURL(state[id])
		ok(err == nil && ref.SameKey(from) && ref.Version != "",
			"%s: PATCH wrote %s, want a version of the key it used (%s)", id, url, state[id])
		before, after := srv.key.ordinal(from.Version), srv.key.ordinal(ref.Version)
		ok(after > before, "%s: PATCH from %s to %s, want only forward moves", id, state[id], url)
		if !s.staleReads() {
			ok(!strings.EqualFold(url, state[id]), "%s: PATCH to %s while already on it", id, url)
		}
		state[id] = url
	}

	// What the product saw: no PATCH after a read already showed the
	// target, and every "server rotated" confirmed by a GET after the
	// PATCH that showed the new version and Succeeded.
	s.tap.mu.Lock()
	calls := s.tap.calls
	tokens := s.tap.tokens
	s.tap.mu.Unlock()
	lastRead := map[string]string{}
	for _, c := range calls {
		switch {
		case c.method == http.MethodGet && c.status == http.StatusOK:
			lastRead[c.path] = c.url
		case c.method == http.MethodPatch && c.status == http.StatusOK:
			ok(!strings.EqualFold(c.url, lastRead[c.path]), "%s: PATCH to %s right after a read showed it", c.path, c.url)
		}
	}
	s.logs.state.mu.Lock()
	rotated := s.logs.state.rotated
	logText := s.logs.state.buf.String()
	s.logs.state.mu.Unlock()
	for _, line := range rotated {
		ok(confirmed(calls, line), "%s reported rotated to %s without a confirming GET", line.server, line.version)
	}

	// No token the product obtained or sent appears in any log line.
	for tok := range tokens {
		ok(!strings.Contains(logText, tok), "a log line contains a bearer token")
	}
}

// confirmed reports whether, before the log line, a successful PATCH of
// the server to the version was followed by a GET showing that version
// and provisioningState Succeeded.
func confirmed(calls []call, line rotatedLine) bool {
	patched := false
	for _, c := range calls {
		if c.seq > line.seq {
			break
		}
		if c.path != line.server || c.status != http.StatusOK {
			continue
		}
		hasVersion := strings.HasSuffix(strings.ToLower(c.url), "/"+strings.ToLower(line.version))
		switch c.method {
		case http.MethodPatch:
			patched = hasVersion
		case http.MethodGet:
			if patched && hasVersion && c.state == "Succeeded" {
				return true
			}
		}
	}
	return false
}
