package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// Why discover leaves a server out of the map.
const (
	foundAdded    = "added"
	foundMapped   = "already mapped"
	foundNoCMK    = "no customer-managed key"
	foundUnmapped = "key not in the map"
	foundBadKey   = "key URL not understood"
	foundSkipped  = "not added: not a Fluid Relay server ID"
)

// DiscoverResult is what cmkrotator discover --json prints.
type DiscoverResult struct {
	Targets TargetsJSON `json:"map"`     // ROTATION_TARGETS with the servers found added
	Servers []Found     `json:"servers"` // every server found, in listing order
}

// TargetsJSON is the subscription map as ROTATION_TARGETS holds it.
type TargetsJSON struct {
	Targets []TargetJSON `json:"targets"`
}

// TargetJSON is one key of TargetsJSON.
type TargetJSON struct {
	Key     string   `json:"key"`
	Servers []string `json:"servers"`
}

// Found is one server discover listed.
type Found struct {
	Server string `json:"server"`
	KeyURL string `json:"keyUrl"`        // empty: no customer-managed key
	Result string `json:"result"`        // "added", or why not
	Key    string `json:"key,omitempty"` // the mapped key it uses
	Scope  string `json:"scope"`         // where it was found
}

func discoverCommand(ctx context.Context, args []string, e env) error {
	fs := newFlags("discover", "usage: cmkrotator discover --scope SCOPE [--scope SCOPE …] [--json]\n\n"+
		"Lists the Fluid Relay servers in each scope, /subscriptions/{id} or\n"+
		"/subscriptions/{id}/resourceGroups/{rg}, and prints the subscription map\n"+
		"(ROTATION_TARGETS) with every server whose key URL uses a mapped key\n"+
		"added to that key. Keys are never added; a server already mapped stays\n"+
		"where it is. On a terminal, a table of the servers found goes to stderr.\n"+
		"A scope that lists no server is named on stderr; when no scope lists one,\n"+
		"discover prints no map and exits 1. Nothing is written to Azure.", e)
	var scopes stringList
	fs.Var(&scopes, "scope", "a subscription or resource group to list (repeatable)")
	asJSON := fs.Bool("json", false, "print the map and every server found as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("discover takes no arguments, got %s", quoted(pos))
	}
	if len(scopes) == 0 {
		return usageError("discover: name at least one --scope /subscriptions/{id}[/resourceGroups/{rg}]")
	}
	for _, s := range scopes {
		if err := checkScope(s); err != nil {
			return usageError("--scope: %v", err)
		}
	}

	a, _, err := cliApp(e)
	if err != nil {
		return err
	}
	rec := &listed{Servers: a.servers}
	out, err := a.targets.Discover(ctx, rec, scopes...)
	if err != nil {
		return failed(err)
	}

	empty := 0
	for _, s := range scopes {
		if rec.counts[strings.ToLower(strings.TrimSuffix(s, "/"))] == 0 {
			empty++
			fmt.Fprintf(e.stderr, "cmkrotator: no Fluid Relay servers in %s: check the subscription ID and that the identity can read it\n", s)
		}
	}
	if empty == len(scopes) {
		return &exitError{code: exitFailed, err: errQuiet}
	}

	res := DiscoverResult{Targets: targetsJSON(out), Servers: found(a.targets, out, rec.found)}
	if *asJSON {
		writeJSONTo(e.stdout, res)
	} else {
		writeJSONTo(e.stdout, res.Targets)
	}
	if isTerminal(e.stderr) {
		printFound(e.stderr, res.Servers)
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, strings.TrimSpace(v))
	return nil
}

// checkScope accepts /subscriptions/{id} and
// /subscriptions/{id}/resourceGroups/{rg}, in any case.
func checkScope(s string) error {
	p := strings.Split(strings.TrimSuffix(s, "/"), "/")
	ok := len(p) >= 3 && p[0] == "" && strings.EqualFold(p[1], "subscriptions") && p[2] != ""
	switch {
	case ok && len(p) == 3:
		return nil
	case ok && len(p) == 5 && strings.EqualFold(p[3], "resourceGroups") && p[4] != "":
		return nil
	}
	return fmt.Errorf("want /subscriptions/{id} or /subscriptions/{id}/resourceGroups/{rg}, got %q", s)
}

// listed passes List on and keeps every server it returned, once each,
// with the scope it was found in.
type listed struct {
	rotation.Servers

	mu     sync.Mutex
	seen   map[string]bool
	found  []scoped
	counts map[string]int // servers listed per scope, lowercase, without a trailing slash
}

type scoped struct {
	rotation.Server
	scope string
}

func (l *listed) List(ctx context.Context, scope string) ([]rotation.Server, error) {
	servers, err := l.Servers.List(ctx, scope)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen, l.counts = map[string]bool{}, map[string]int{}
	}
	l.counts[strings.ToLower(strings.TrimSuffix(scope, "/"))] += len(servers)
	for _, s := range servers {
		if id := strings.ToLower(s.ID); !l.seen[id] {
			l.seen[id] = true
			l.found = append(l.found, scoped{s, scope})
		}
	}
	return servers, err
}

// found says for every server listed whether discover added it to the
// map (before → after), and why not.
func found(before, after rotation.Targets, servers []scoped) []Found {
	mapped := map[string]bool{}
	for _, id := range before.ServerIDs() {
		mapped[strings.ToLower(id)] = true
	}
	out := make([]Found, 0, len(servers))
	for _, s := range servers {
		f := Found{Server: s.ID, KeyURL: s.KeyURL, Scope: s.scope}
		ref, err := rotation.ParseKeyURL(s.KeyURL)
		target, ok := after.Lookup(ref)
		if err == nil && ok {
			f.Key = target.Key.String()
		}
		switch {
		case mapped[strings.ToLower(s.ID)]:
			f.Result = foundMapped
		case s.KeyURL == "":
			f.Result = foundNoCMK
		case err != nil:
			f.Result = foundBadKey
		case !ok:
			f.Result = foundUnmapped
		case containsFold(target.Servers, s.ID):
			f.Result = foundAdded
		default:
			f.Result = foundSkipped
		}
		out = append(out, f)
	}
	return out
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func targetsJSON(t rotation.Targets) TargetsJSON {
	out := TargetsJSON{Targets: []TargetJSON{}}
	for _, tg := range t.All() {
		servers := tg.Servers
		if servers == nil {
			servers = []string{}
		}
		out.Targets = append(out.Targets, TargetJSON{Key: tg.Key.String(), Servers: servers})
	}
	return out
}

func printFound(w io.Writer, servers []Found) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tKEY URL\tRESULT")
	added := 0
	for _, f := range servers {
		key := f.KeyURL
		if key == "" {
			key = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", shortID(f.Server), key, f.Result)
		if f.Result == foundAdded {
			added++
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s found, %d added to the map\n", plural(len(servers), "server"), added)
}
