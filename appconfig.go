// Package cmkrotator holds the function app's configuration as the
// repository root keeps it and the Functions host reads it: host.json and
// one folder per function with its function.json. The binary's packages
// live in function, handler, rotation, azure and emulator.
package cmkrotator

import "embed"

// App is host.json and every <Function>/function.json, embedded, so that
// cmkrotator local plays exactly the app that is deployed, wherever it
// runs.
//
//go:embed host.json */function.json
var App embed.FS
