package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/handler"
	"github.com/cmkrotator/cmkrotator/rotation"
)

// shutdownGrace bounds the wait for in-flight invocations on SIGTERM: an
// Event Grid invocation's own deadline is 25 s.
const shutdownGrace = 30 * time.Second

// eventGridWait is how long Event Grid waits for the answer to a
// delivery (30 s) less a margin for the host: a rotation deadline beyond
// it outlives the delivery, which Event Grid then counts as failed.
// https://learn.microsoft.com/azure/event-grid/delivery-and-retry
const eventGridWait = 28 * time.Second

func serveCommand(ctx context.Context, args []string, e env) error {
	fs := newFlags("serve", "usage: cmkrotator [serve]\n\n"+
		"Serves the custom handler on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT, as the\n"+
		"Azure Functions host starts it. Settings come from the environment.", e)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("serve takes no arguments, got %s", quoted(pos))
	}
	s, err := loadSettings(e.getenv, true, true)
	if err != nil {
		return err
	}
	log := newLogger(s.LogFormat, s.LogLevel, e.stdout, e.stderr)
	if s.ReconcileSchedule == "" {
		// Reconcile/function.json's schedule is %ROTATION_RECONCILE_SCHEDULE%;
		// the host cannot resolve it and leaves the function in error, with
		// nothing in the handler's own log to say so.
		log.Warn("ROTATION_RECONCILE_SCHEDULE is not set: the host cannot load the Reconcile timer, so drift is "+
			"never reconciled; the event trigger and the API still work",
			"setting", "ROTATION_RECONCILE_SCHEDULE", "example", "0 0 */6 * * *")
	}
	if s.Deadline > eventGridWait {
		log.Warn("ROTATION_DEADLINE leaves the host no time to answer before Event Grid gives up on a delivery; "+
			"a slow rotation is redelivered while it still runs",
			"deadline", s.Deadline, "at_most", eventGridWait, "event_grid_wait", 30*time.Second)
	}

	app, err := newApp(s, azcore.ClientOptions{}, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", s.Port, err)
	}
	log.Info("serving", "addr", ln.Addr().String(), "keys", s.Targets.Len(),
		"servers", len(s.Targets.ServerIDs()), "dry_run", s.DryRun, "identity", app.cred.what)
	go app.cred.run(ctx) // logs one clear line if the identity is refused
	return serveOn(ctx, ln, app.handler, log)
}

// newLocker builds the Locker ROTATION_LOCK_CONTAINER names; nil (within
// this process only) when it names none.
func newLocker(s Settings, cred azcore.TokenCredential, opts azcore.ClientOptions, log *slog.Logger) (rotation.Locker, error) {
	lo := &azure.BlobLockerOptions{ClientOptions: opts, Logger: log}
	var (
		l   *azure.BlobLocker
		err error
	)
	switch {
	case s.LockContainer == "":
		log.Debug("rotations of a key are serialised within this process only", "setting", "ROTATION_LOCK_CONTAINER")
		return nil, nil
	case s.LockConnection != "":
		l, err = azure.NewBlobLockerFromConnectionString(s.LockConnection, s.LockContainer, lo)
	default:
		l, err = azure.NewBlobLocker(s.LockContainer, cred, lo)
	}
	if err != nil {
		return nil, &settingsError{name: "ROTATION_LOCK_CONTAINER", err: err}
	}
	log.Debug("rotations of a key are locked across instances", "container", l.String())
	return l, nil
}

// app is everything a command needs, built from settings.
type app struct {
	targets rotation.Targets
	rotator *rotation.Rotator
	servers *azure.FluidRelay
	cred    *credentialCheck
	handler http.Handler

	// token is the credential itself, for the other Azure clients a
	// command builds (blob storage, Event Grid).
	token azcore.TokenCredential
}

// newApp builds the credential, the Azure clients, the rotator and the
// handler. opts carry the transport (the emulator's, for local).
func newApp(s Settings, opts azcore.ClientOptions, log *slog.Logger) (*app, error) {
	cred, what, err := newCredential(s, opts)
	if err != nil {
		return nil, err
	}
	keys := azure.NewKeyVault(cred, &azure.KeyVaultOptions{ClientOptions: opts})
	servers, err := azure.NewFluidRelay(cred, &azure.FluidRelayOptions{
		Endpoint:      s.ARMEndpoint,
		Audience:      s.ARMAudience,
		ClientOptions: opts,
	})
	if err != nil {
		return nil, fmt.Errorf("create Fluid Relay client: %w", err)
	}
	locker, err := newLocker(s, cred, opts, log)
	if err != nil {
		return nil, err
	}
	rot, err := rotation.New(rotation.Config{
		Keys:        keys,
		Servers:     servers,
		Targets:     s.Targets,
		Concurrency: s.Concurrency,
		Deadline:    s.Deadline,
		DryRun:      s.DryRun,
		Logger:      log,
		Locker:      locker,
	})
	if err != nil {
		return nil, err
	}
	check := newCredentialCheck(cred, what, s.ARMAudience, log)
	check.hint = func(err error) string { return credentialHint(s, err) }
	check.managed = s.IdentityEndpoint != ""
	h, err := handler.New(handler.Config{
		Rotator:    rot,
		Credential: check.status,
		Logger:     log,
	})
	if err != nil {
		return nil, err
	}
	return &app{targets: s.Targets, rotator: rot, servers: servers, cred: check, handler: h, token: cred}, nil
}

// serveOn serves h on ln until ctx ends, then lets in-flight requests
// finish within shutdownGrace, and cancels the context of those still
// running when it is over.
func serveOn(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	// Handlers outlive ctx by the grace period, no longer.
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute, // bodies are bounded and sent at once
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	select {
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		cancelBase()
		srv.Close()
		return fmt.Errorf("shut down: in-flight requests cancelled after %v: %w", shutdownGrace, err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}
