package main

import (
	"fmt"

	"github.com/cmkrotator/cmkrotator/internal/fakehost"
)

// The function app's configuration, as the repository root holds it
// (host.json and the function folders), for cmkrotator local, which plays
// the host wherever it runs. TestAppConfigMatchesTheRepository keeps the
// two the same.
const hostJSON = `{
  "version": "2.0",
  "customHandler": {
    "description": {
      "defaultExecutablePath": "cmkrotator",
      "workingDirectory": "",
      "arguments": ["serve"]
    },
    "enableForwardingHttpRequest": true
  },
  "extensions": {"http": {"routePrefix": "api"}}
}`

var functionJSON = map[string]string{
	"KeyNewVersionCreated": `{"bindings": [
    {"type": "eventGridTrigger", "name": "event", "direction": "in"}]}`,
	"Reconcile": `{"bindings": [
    {"type": "timerTrigger", "direction": "in", "name": "timer",
     "schedule": "%ROTATION_RECONCILE_SCHEDULE%", "runOnStartup": false, "useMonitor": true}]}`,
	"Replay": `{"bindings": [
    {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function",
     "methods": ["post"], "route": "replay"},
    {"type": "http", "direction": "out", "name": "res"}]}`,
	"Rotate": `{"bindings": [
    {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function",
     "methods": ["post"], "route": "rotate"},
    {"type": "http", "direction": "out", "name": "res"}]}`,
	"Status": `{"bindings": [
    {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function",
     "methods": ["get"], "route": "status"},
    {"type": "http", "direction": "out", "name": "res"}]}`,
}

// localApp is the function app as the Functions host reads it.
func localApp() (*fakehost.App, error) {
	files := map[string][]byte{}
	for name, f := range functionJSON {
		files[name] = []byte(f)
	}
	app, err := fakehost.ParseApp([]byte(hostJSON), files)
	if err != nil {
		return nil, fmt.Errorf("read the function app: %w", err)
	}
	return app, nil
}
