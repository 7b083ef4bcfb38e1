package fakehost

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// App is a function app as the host reads it from its root folder:
// host.json, and a function.json in each function's folder, the folder's
// name being the function's.
type App struct {
	// Root is the app root; zero for an App parsed from memory.
	Root string

	// Handler is host.json's customHandler.description.
	Handler Description
	// Forwarding is customHandler.enableForwardingHttpRequest: functions
	// with exactly one httpTrigger and one http output get the client's
	// request as it came; off, every function gets a JSON envelope.
	Forwarding bool
	// RoutePrefix is extensions.http.routePrefix, "api" unless host.json
	// says otherwise (it may say "").
	RoutePrefix string

	// Functions are the functions, by name.
	Functions map[string]Function
}

// Description is customHandler.description: what the host starts.
type Description struct {
	DefaultExecutablePath string   `json:"defaultExecutablePath"`
	WorkingDirectory      string   `json:"workingDirectory"`
	Arguments             []string `json:"arguments"`
}

// Function is one function.json.
type Function struct {
	Name     string
	Bindings []Binding
}

// Binding is one entry of function.json's bindings, with the properties
// the fake host reads.
type Binding struct {
	Type      string   `json:"type"`
	Direction string   `json:"direction"`
	Name      string   `json:"name"`
	AuthLevel string   `json:"authLevel,omitempty"` // httpTrigger: anonymous, function (zero) or admin
	Methods   []string `json:"methods,omitempty"`   // httpTrigger, lower case; zero: every method
	Route     string   `json:"route,omitempty"`     // httpTrigger; zero: the function's name
	Schedule  string   `json:"schedule,omitempty"`  // timerTrigger: NCRONTAB, TimeSpan or %SETTING%
	DataType  string   `json:"dataType,omitempty"`  // "binary" stops base64 decoding of an output
}

// Trigger returns the function's trigger binding; ParseApp makes sure
// there is exactly one.
func (f Function) Trigger() Binding {
	for _, b := range f.Bindings {
		if isTrigger(b) {
			return b
		}
	}
	return Binding{}
}

// Output returns the output binding named name ("$return" for the
// return value).
func (f Function) Output(name string) (Binding, bool) {
	for _, b := range f.Bindings {
		if strings.EqualFold(b.Direction, "out") && b.Name == name {
			return b, true
		}
	}
	return Binding{}, false
}

// httpOut returns the function's http output binding.
func (f Function) httpOut() (Binding, bool) {
	for _, b := range f.Bindings {
		if strings.EqualFold(b.Type, "http") && strings.EqualFold(b.Direction, "out") {
			return b, true
		}
	}
	return Binding{}, false
}

// forwardable reports whether the host forwards the function's requests
// when forwarding is on: exactly one httpTrigger and one http output
// (FunctionMetadataExtensions.IsHttpInAndOutFunction).
func (f Function) forwardable() bool {
	_, out := f.httpOut()
	return len(f.Bindings) == 2 && strings.EqualFold(f.Trigger().Type, "httpTrigger") && out
}

func isTrigger(b Binding) bool {
	return strings.HasSuffix(strings.ToLower(b.Type), "trigger") && !strings.EqualFold(b.Direction, "out")
}

// LoadApp reads the app in root: host.json and every root/*/function.json.
func LoadApp(root string) (*App, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("load app %s: %w", root, err)
	}
	app, err := LoadAppFS(os.DirFS(abs))
	if err != nil {
		return nil, fmt.Errorf("load app %s: %w", abs, err)
	}
	app.Root = abs
	return app, nil
}

// LoadAppFS reads an app from fsys, which holds host.json and the
// function folders at its root (such as the module's embedded
// configuration). The app's Root is empty.
func LoadAppFS(fsys fs.FS) (*App, error) {
	host, err := fs.ReadFile(fsys, "host.json")
	if err != nil {
		return nil, err
	}
	paths, err := fs.Glob(fsys, "*/function.json")
	if err != nil {
		return nil, err
	}
	functions := map[string][]byte{}
	for _, p := range paths {
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		functions[path.Dir(p)] = b
	}
	return ParseApp(host, functions)
}

// ParseApp reads an app from host.json's bytes and each function's
// function.json bytes, by function name. It refuses what the host refuses
// at start (no version 2.0, no customHandler, no executable, a function
// without exactly one trigger, an unknown authLevel) and what the fake
// host cannot play (triggers other than http, Event Grid and timer).
func ParseApp(hostJSON []byte, functions map[string][]byte) (*App, error) {
	// Config binding is case-insensitive, as encoding/json's matching.
	var h struct {
		Version       string `json:"version"`
		CustomHandler *struct {
			Description                 Description `json:"description"`
			EnableForwardingHttpRequest bool        `json:"enableForwardingHttpRequest"`
		} `json:"customHandler"`
		Extensions struct {
			HTTP struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(hostJSON, &h); err != nil {
		return nil, fmt.Errorf("host.json: %w", err)
	}
	switch {
	case h.Version != "2.0":
		return nil, fmt.Errorf("host.json: version: want \"2.0\", got %q", h.Version)
	case h.CustomHandler == nil:
		return nil, errors.New("host.json: no customHandler section")
	case h.CustomHandler.Description.DefaultExecutablePath == "":
		return nil, errors.New("host.json: customHandler.description.defaultExecutablePath is empty")
	}
	app := &App{
		Handler:     h.CustomHandler.Description,
		Forwarding:  h.CustomHandler.EnableForwardingHttpRequest,
		RoutePrefix: "api",
		Functions:   map[string]Function{},
	}
	if p := h.Extensions.HTTP.RoutePrefix; p != nil {
		app.RoutePrefix = strings.Trim(*p, "/")
	}

	names := make([]string, 0, len(functions))
	for name := range functions {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn, err := parseFunction(name, functions[name])
		if err != nil {
			return nil, fmt.Errorf("%s/function.json: %w", name, err)
		}
		app.Functions[name] = fn
	}
	return app, nil
}

func parseFunction(name string, data []byte) (Function, error) {
	var f struct {
		Bindings []Binding `json:"bindings"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return Function{}, err
	}
	fn := Function{Name: name, Bindings: f.Bindings}
	var triggers []Binding
	for i, b := range fn.Bindings {
		if b.Name == "" {
			return Function{}, fmt.Errorf("binding %d has no name", i)
		}
		if isTrigger(b) {
			triggers = append(triggers, b)
		}
	}
	if len(triggers) != 1 {
		return Function{}, fmt.Errorf("want exactly one trigger binding, got %d", len(triggers))
	}

	t := &fn.Bindings[slices.IndexFunc(fn.Bindings, isTrigger)]
	switch strings.ToLower(t.Type) {
	case "httptrigger":
		t.AuthLevel = strings.ToLower(t.AuthLevel)
		if t.AuthLevel == "" {
			t.AuthLevel = "function"
		}
		if !slices.Contains([]string{"anonymous", "function", "admin"}, t.AuthLevel) {
			return Function{}, fmt.Errorf("authLevel: want anonymous, function or admin, got %q", t.AuthLevel)
		}
		for i, m := range t.Methods {
			t.Methods[i] = strings.ToLower(m)
		}
		if t.Route == "" {
			t.Route = name
		}
		t.Route = strings.Trim(t.Route, "/")
	case "eventgridtrigger":
	case "timertrigger":
		if t.Schedule == "" {
			return Function{}, errors.New("timerTrigger: no schedule")
		}
	default:
		return Function{}, fmt.Errorf("trigger type %q: the fake host plays httpTrigger, eventGridTrigger and timerTrigger", t.Type)
	}
	return fn, nil
}

// function returns the function name, which must have a trigger of type
// want (case-insensitive; "" for any).
func (a *App) function(name, want string) (Function, error) {
	fn, ok := a.Functions[name]
	if !ok {
		return Function{}, fmt.Errorf("no function %s in the app", name)
	}
	if got := fn.Trigger().Type; want != "" && !strings.EqualFold(got, want) {
		return Function{}, fmt.Errorf("function %s: trigger is %s, not %s", name, got, want)
	}
	return fn, nil
}

// route finds the HTTP function whose route matches path, a public path
// (/api/…), and the route's parameters. Literal segments match
// case-insensitively, as ASP.NET routing does; {name} and {name:constraint}
// match one segment, {name?} one or none at the end, {*name} the rest.
func (a *App) route(path string) (Function, map[string]string, bool) {
	rest := strings.Trim(path, "/")
	if a.RoutePrefix != "" {
		var ok bool
		if rest, ok = cutFold(rest, a.RoutePrefix); !ok {
			return Function{}, nil, false
		}
		if rest != "" && rest[0] != '/' {
			return Function{}, nil, false
		}
		rest = strings.TrimPrefix(rest, "/")
	}
	names := make([]string, 0, len(a.Functions))
	for name := range a.Functions {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := a.Functions[name]
		if !strings.EqualFold(fn.Trigger().Type, "httpTrigger") {
			continue
		}
		if params, ok := matchRoute(fn.Trigger().Route, rest); ok {
			return fn, params, true
		}
	}
	return Function{}, nil, false
}

func cutFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func matchRoute(template, path string) (map[string]string, bool) {
	tpl := strings.Split(template, "/")
	var segs []string
	if path != "" {
		segs = strings.Split(path, "/")
	}
	params := map[string]string{}
	for i, t := range tpl {
		if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
			name := strings.Trim(t, "{}")
			name, _, _ = strings.Cut(name, ":")
			switch {
			case strings.HasPrefix(name, "*"):
				params[strings.TrimPrefix(name, "*")] = strings.Join(segs[min(i, len(segs)):], "/")
				return params, true
			case strings.HasSuffix(name, "?"):
				if i < len(segs) {
					params[strings.TrimSuffix(name, "?")] = segs[i]
				}
				continue
			}
			if i >= len(segs) || segs[i] == "" {
				return nil, false
			}
			params[name] = segs[i]
			continue
		}
		if i >= len(segs) || !strings.EqualFold(t, segs[i]) {
			return nil, false
		}
	}
	return params, len(segs) <= len(tpl)
}
