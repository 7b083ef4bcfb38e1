package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/cmkrotator/cmkrotator"
	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/fakehost"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// The seeded world of cmkrotator local.
const (
	localVault    = "contoso-kv"
	localKey      = "fluid-cmk"   // RSA, two versions, then the rotation
	localOtherKey = "archive-cmk" // RSA, used by one server, not subscribed
	localECKey    = "signing-ec"  // EC: cannot wrap keys, never a CMK
)

// localServer is a seeded Fluid Relay server and what the rotation must do
// with it.
type localServer struct {
	name   string
	pin    string // "old", "current", "versionless" or "other"
	expect rotation.Outcome
	why    string
}

var localServers = []localServer{
	{"relay-eu", "old", rotation.Rotated, "pinned to the older version"},
	{"relay-us", "old", rotation.Rotated, "pinned to the older version"},
	{"relay-asia", "current", rotation.Rotated, "pinned to the version that was current"},
	{"relay-follow", "versionless", rotation.Skipped, "versionless: follows the key itself"},
	{"relay-archive", "other", rotation.Skipped, "uses another key: reported, never moved"},
}

// LocalResult is what cmkrotator local --json prints.
type LocalResult struct {
	OK bool `json:"ok"`
	// Handler is the local Functions host's address, which the curl
	// lines call while local keeps serving; empty with --once, after
	// which nothing serves there.
	Handler    string         `json:"handler,omitempty"`
	Key        string         `json:"key"`
	NewVersion string         `json:"newVersion"`
	Invocation LocalInvoke    `json:"invocation"`
	Servers    []LocalOutcome `json:"servers"`
}

// LocalInvoke is the Event Grid invocation as the host judged it.
type LocalInvoke struct {
	ID              string   `json:"id"`
	HandlerStatus   int      `json:"handlerStatus"`
	Succeeded       bool     `json:"succeeded"`
	Failure         string   `json:"failure,omitempty"`
	EventGridStatus int      `json:"eventGridStatus"`
	Logs            []string `json:"logs"`
}

// LocalOutcome is one server before and after, checked against the
// emulator's own record of it.
type LocalOutcome struct {
	ID       string `json:"id"`
	Expected string `json:"expected"`
	Before   string `json:"before"`
	After    string `json:"after"`
	Verified bool   `json:"verified"` // the emulator shows the expected URL, and a PATCH was confirmed by a GET
	Detail   string `json:"detail"`
}

func localCommand(ctx context.Context, args []string, e env) error {
	fs := newFlags("local", "usage: cmkrotator local [flags]\n\n"+
		"Runs the whole system on this machine: starts an emulation of Key Vault,\n"+
		"managed identity and Fluid Relay, serves the handler as the Functions host\n"+
		"would, creates a new key version, delivers the KeyNewVersionCreated event\n"+
		"through the host's envelope, and prints what happened to every server.\n"+
		"Then it keeps serving, with curl lines to try; --once exits instead.", e)
	once := fs.Bool("once", false, "exit after the report: 0 only if every server ended as expected")
	asJSON := fs.Bool("json", false, "print the report as JSON; the curl lines go to stderr")
	port := fs.Int("port", 0, "port of the local Functions host the curl lines call (the handler gets a free one); zero: a free one")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usageError("local takes no arguments, got %s", quoted(pos))
	case *port < 0 || *port > 65535:
		return usageError("local: --port: want 0 to 65535, got %d", *port)
	}
	s, err := loadSettings(e.getenv, false, false)
	if err != nil {
		return err
	}
	if s.LogFormat == "" {
		s.LogFormat = "text"
	}
	log := newLogger(s.LogFormat, s.LogLevel, e.stderr, e.stderr)

	// The port asked for first, so that a busy one fails before anything
	// is started or seeded.
	pub, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		return fmt.Errorf("local: --port %d: %w", *port, err)
	}
	defer pub.Close()

	// Azure, locally.
	em, err := emulator.Start(emulator.Options{Logger: log.With("component", "emulator")})
	if err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	defer em.Close()
	dir, err := os.MkdirTemp("", "cmkrotator-local-")
	if err != nil {
		return fmt.Errorf("create work folder: %w", err)
	}
	defer os.RemoveAll(dir)
	w, err := seedLocal(em, dir, log)
	if err != nil {
		return err
	}

	// The handler, as the host runs it: settings, managed identity through
	// IDENTITY_ENDPOINT, a loopback port.
	for k, v := range map[string]string{
		"IDENTITY_ENDPOINT": em.IdentityEndpoint(),
		"IDENTITY_HEADER":   em.IdentityHeader(),
	} {
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("set %s: %w", k, err)
		}
	}
	s.IdentityEndpoint, s.ClientID = em.IdentityEndpoint(), em.ClientID()
	s.ARMEndpoint, s.Targets, s.TargetsSource = em.ARMEndpoint(), w.targets, "local"
	a, err := newApp(s, azcore.ClientOptions{Transport: em.HTTPClient()}, log)
	if err != nil {
		return err
	}
	// The handler on a free loopback port, as the host picks one, and
	// the host's public endpoint in front of it, which checks a function
	// key of this run's own.
	app, err := fakehost.LoadAppFS(cmkrotator.App)
	if err != nil {
		return fmt.Errorf("read the function app: %w", err)
	}
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	host, err := fakehost.New("http://"+hln.Addr().String(), app, fakehost.Options{})
	if err != nil {
		hln.Close()
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 2)
	go func() { served <- serveOn(sctx, hln, a.handler, log) }()
	go func() { served <- serveOn(sctx, pub, host, log.With("component", "host")) }()
	// wait stops both servers and returns how they ended.
	wait := func() error {
		stop()
		return errors.Join(<-served, <-served)
	}
	if err := host.WaitReady(ctx); err != nil {
		return err
	}
	url := "http://" + pub.Addr().String()
	log.Info("handler serving", "addr", host.URL(), "host", url)
	if st := a.cred.run(ctx); !st.OK {
		return fmt.Errorf("local identity refused: %s", st.Error)
	}

	// The rotation, as Key Vault and Event Grid would drive it.
	res, err := w.rotateAndDeliver(ctx, em, host, log)
	if err != nil {
		return err
	}
	if !*once {
		res.Handler = url // nothing serves there after --once
	}
	if *asJSON {
		writeJSONTo(e.stdout, res)
	} else {
		printLocal(e.stdout, res)
	}
	if *once {
		if err := wait(); err != nil {
			return err
		}
		if !res.OK {
			return &exitError{code: exitFailed, err: errQuiet}
		}
		return nil
	}

	// With --json, stdout is the one JSON document scripts read.
	hints := e.stdout
	if *asJSON {
		hints = e.stderr
	}
	w.printTryLines(hints, em, url, host.FunctionKey())
	log.Info("serving until interrupted", "addr", url)
	err = <-served
	stop()
	return errors.Join(err, <-served)
}

// localWorld is the seeded state.
type localWorld struct {
	vault   *emulator.Vault
	key     rotation.KeyRef // versionless
	servers []string        // ARM IDs, in localServers order
	targets rotation.Targets
	retired string // versioned URL of a disabled version of the key
	dir     string // files for the curl lines; removed on exit
}

// seedLocal seeds the emulator and writes the subscription map into dir.
func seedLocal(em *emulator.Emulator, dir string, log *slog.Logger) (*localWorld, error) {
	v := em.AddVault(localVault)
	retired, err := v.CreateKey(localKey, emulator.KeyOptions{Disabled: true})
	if err != nil {
		return nil, fmt.Errorf("seed key %s: %w", localKey, err)
	}
	old, err := v.RotateKey(localKey)
	if err != nil {
		return nil, fmt.Errorf("seed key %s: %w", localKey, err)
	}
	cur, err := v.RotateKey(localKey)
	if err != nil {
		return nil, fmt.Errorf("seed key %s: %w", localKey, err)
	}
	other, err := v.CreateKey(localOtherKey, emulator.KeyOptions{})
	if err != nil {
		return nil, fmt.Errorf("seed key %s: %w", localOtherKey, err)
	}
	if _, err := v.CreateKey(localECKey, emulator.KeyOptions{Type: "EC"}); err != nil {
		return nil, fmt.Errorf("seed key %s: %w", localECKey, err)
	}
	key, err := rotation.ParseKeyURL(v.URL() + "/keys/" + localKey)
	if err != nil {
		return nil, err
	}
	log.Info("vault seeded", "vault", v.URL(), "key_name", localKey, "versions", old.Version+","+cur.Version,
		"disabled_version", retired.Version,
		"other_keys", localOtherKey+","+localECKey+" (EC)")

	w := &localWorld{vault: v, key: key, retired: retired.KID, dir: dir}
	for _, ls := range localServers {
		url := map[string]string{
			"old":         old.KID,
			"current":     cur.KID,
			"versionless": key.String(),
			"other":       other.KID,
		}[ls.pin]
		id, err := em.PutServer(emulator.ServerSpec{Name: ls.name, KeyURL: url})
		if err != nil {
			return nil, fmt.Errorf("seed server %s: %w", ls.name, err)
		}
		w.servers = append(w.servers, id)
		log.Info("server seeded", "server_id", id, "key_url", url)
	}

	m, _ := json.Marshal(map[string]any{"targets": []map[string]any{{"key": key.String(), "servers": w.servers}}})
	if w.targets, err = rotation.ParseTargets(m); err != nil {
		return nil, fmt.Errorf("build subscription map: %w", err)
	}
	if err := os.WriteFile(filepath.Join(w.dir, "targets.json"), m, 0o600); err != nil {
		return nil, fmt.Errorf("write subscription map: %w", err)
	}
	return w, nil
}

// rotateAndDeliver creates a new version of the key, delivers Key Vault's
// event through the host's envelope, and checks every server against the
// emulator.
func (w *localWorld) rotateAndDeliver(ctx context.Context, em *emulator.Emulator, host *fakehost.Host, log *slog.Logger) (*LocalResult, error) {
	before := make([]string, len(w.servers))
	for i, id := range w.servers {
		before[i], _ = em.ServerKeyURL(id)
	}

	nv, err := w.vault.RotateKey(localKey)
	if err != nil {
		return nil, fmt.Errorf("rotate key %s: %w", localKey, err)
	}
	log.Info("new key version created", "key_name", localKey, "key_version", nv.Version)
	ev, err := json.Marshal(em.KeyEvent(emulator.KeyNewVersionCreated, nv, localVault))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(w.dir, "event.json"), append([]byte("["), append(ev, ']')...), 0o600); err != nil {
		return nil, fmt.Errorf("write event: %w", err)
	}

	em.ResetRequests()
	log.Info("delivering event", "function", "KeyNewVersionCreated", "key_version", nv.Version)
	inv, err := host.EventGrid(ctx, "KeyNewVersionCreated", ev, fakehost.EventOptions{})
	if err != nil {
		return nil, fmt.Errorf("deliver event: %w", err)
	}
	log.Info("event delivered", "invocation_id", inv.InvocationID, "succeeded", inv.Succeeded,
		"event_grid_status", inv.EventGridStatus())

	res := &LocalResult{
		OK: inv.Succeeded, Key: w.key.String(), NewVersion: nv.Version,
		Invocation: LocalInvoke{ID: inv.InvocationID, HandlerStatus: inv.Status, Succeeded: inv.Succeeded,
			Failure: inv.Failure, EventGridStatus: inv.EventGridStatus(), Logs: nonNilLines(inv.Logs)},
	}
	reqs := em.Requests()
	for i, id := range w.servers {
		after, _ := em.ServerKeyURL(id)
		o := LocalOutcome{ID: id, Expected: string(localServers[i].expect), Before: before[i], After: after}
		switch localServers[i].expect {
		case rotation.Rotated:
			patched, confirmed := patchedAndConfirmed(reqs, id)
			o.Verified = after == nv.KID && patched && confirmed
			o.Detail = fmt.Sprintf("%s; now on the new version: %t, PATCH sent: %t, confirmed by GET: %t",
				localServers[i].why, after == nv.KID, patched, confirmed)
		default:
			patched, _ := patchedAndConfirmed(reqs, id)
			o.Verified = after == before[i] && !patched
			o.Detail = fmt.Sprintf("%s; unchanged: %t", localServers[i].why, after == before[i])
		}
		res.OK = res.OK && o.Verified
		res.Servers = append(res.Servers, o)
	}
	return res, nil
}

// patchedAndConfirmed reports whether the emulator saw a successful PATCH
// of server id and a successful GET after it.
func patchedAndConfirmed(reqs []emulator.Request, id string) (patched, confirmed bool) {
	for _, r := range reqs {
		if r.Service != "arm" || !strings.EqualFold(r.Path, id) || r.Status/100 != 2 {
			continue
		}
		switch {
		case r.Method == http.MethodPatch:
			patched = true
		case r.Method == http.MethodGet && patched:
			confirmed = true
		}
	}
	return patched, confirmed
}

func nonNilLines(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func versionOf(keyURL string) string {
	ref, err := rotation.ParseKeyURL(keyURL)
	switch {
	case err != nil:
		return keyURL
	case ref.Version == "":
		return ref.Name + " (versionless)"
	}
	return ref.Name + "/" + short(ref.Version)
}

func printLocal(w io.Writer, r *LocalResult) {
	fmt.Fprintf(w, "\nKey %s rotated to version %s; event delivered to KeyNewVersionCreated.\n", r.Key, r.NewVersion)
	verdict := "succeeded (Event Grid gets 202)"
	if !r.Invocation.Succeeded {
		verdict = fmt.Sprintf("failed: %s (Event Grid gets 500 and redelivers)", r.Invocation.Failure)
	}
	fmt.Fprintf(w, "Invocation %s %s.\n\n", r.Invocation.ID, verdict)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tEXPECTED\tBEFORE\tAFTER\tVERIFIED")
	for _, s := range r.Servers {
		mark := "yes"
		if !s.Verified {
			mark = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", shortID(s.ID), s.Expected, versionOf(s.Before), versionOf(s.After), mark)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if r.OK {
		fmt.Fprintln(w, "Every subscribed server ended as expected, each change confirmed by a GET.")
	} else {
		fmt.Fprintln(w, "Some servers did not end as expected:")
		for _, s := range r.Servers {
			if !s.Verified {
				fmt.Fprintf(w, "  %s: %s\n", shortID(s.ID), s.Detail)
			}
		}
	}
}

// printTryLines prints what to try against the running system: curl
// lines through the host's public endpoint at base, with key, and the
// command line against the same emulator.
func (w *localWorld) printTryLines(out io.Writer, em *emulator.Emulator, base, key string) {
	ec := w.vault.URL() + "/keys/" + localECKey
	fmt.Fprintf(out, `
The handler keeps serving behind a local Functions host at %[1]s,
which checks the function key as the host in Azure does (401 without it).
The key is this run's own, local: it opens nothing outside this machine.
Try, in another terminal:

  # status of every subscribed key and server
  curl -s -H "x-functions-key: %[14]s" %[1]s/api/status
  # a dry run, then the rotation itself (every server is current: nothing moves)
  curl -s -X POST -H "x-functions-key: %[14]s" %[1]s/api/rotate -H 'Content-Type: application/json' -d '{"key":"%[2]s","dryRun":true}'
  curl -s -X POST -H "x-functions-key: %[14]s" %[1]s/api/rotate -H 'Content-Type: application/json' -d '{"key":"%[2]s"}'
  # a disabled version cannot protect a server: 422
  curl -s -X POST -H "x-functions-key: %[14]s" %[1]s/api/rotate -H 'Content-Type: application/json' -d '{"key":"%[12]s"}'
  # a key not in the subscription map is refused: 404
  curl -s -X POST -H "x-functions-key: %[14]s" %[1]s/api/rotate -H 'Content-Type: application/json' -d '{"key":"%[3]s"}'
  # the event just delivered, replayed (a no-op now)
  curl -s -X POST -H "x-functions-key: %[14]s" %[1]s/api/replay -H 'Content-Type: application/json' --data-binary @%[4]s
  # a new key version, its event delivered as Event Grid does, through the host's webhook: 202
  curl -s -X POST %[11]s/vaults/%[15]s/keys/%[16]s/rotate
  curl -s -X POST %[11]s/events -d '{"vault":"%[15]s","key":"%[16]s"}' | curl -s -X POST -H "x-functions-key: %[14]s" "%[1]s/runtime/webhooks/eventgrid?functionName=KeyNewVersionCreated" -H 'aeg-event-type: Notification' -H 'Content-Type: application/json' --data-binary @- -w '%%{http_code}\n'
  # the Reconcile timer, run by hand as the admin endpoint does: 202
  curl -s -X POST -H "x-functions-key: %[14]s" %[1]s/admin/functions/Reconcile -H 'Content-Type: application/json' -d '{"input":""}' -w '%%{http_code}\n'

Or the command line against the same emulator, built once from the
repository root so that its exit codes are the README's (under go run
every failure exits 1):

  go build -o cmkrotator ./function
  export IDENTITY_ENDPOINT=%[5]s IDENTITY_HEADER=%[6]s AZURE_CLIENT_ID=%[7]s \
    SSL_CERT_FILE=%[8]s ROTATION_ARM_ENDPOINT=%[9]s ROTATION_TARGETS_FILE=%[10]s
  # exit 1: relay-archive uses another key (mismatch), for a person to sort out
  ./cmkrotator status
  ./cmkrotator rotate --dry-run %[2]s
  ./cmkrotator replay %[4]s

Emulator control surface: %[11]s (GET %[11]s/ lists its routes)
%[13]s is removed on exit. Stop with Ctrl-C.
`, base, w.key.String(), ec, filepath.Join(w.dir, "event.json"),
		em.IdentityEndpoint(), em.IdentityHeader(), em.ClientID(), em.CertFile(), em.ARMEndpoint(),
		filepath.Join(w.dir, "targets.json"), em.ControlURL(), w.retired, w.dir, key,
		w.vault.Name(), w.key.Name)
}
