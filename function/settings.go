package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// Settings are the app settings, read from the environment once at start.
// Every field's zero value is the documented default.
type Settings struct {
	Port int // FUNCTIONS_CUSTOMHANDLER_PORT; required by serve

	ClientID         string // AZURE_CLIENT_ID: the user-assigned identity; zero: system-assigned or developer login
	IdentityEndpoint string // IDENTITY_ENDPOINT, set by App Service: use managed identity

	Targets       rotation.Targets // ROTATION_TARGETS or the file ROTATION_TARGETS_FILE names
	TargetsSource string           // where Targets came from, for messages

	ARMEndpoint string        // ROTATION_ARM_ENDPOINT; zero: https://management.azure.com
	ARMAudience string        // ROTATION_ARM_AUDIENCE; zero: https://management.core.windows.net/
	Concurrency int           // ROTATION_CONCURRENCY; zero: 8
	Deadline    time.Duration // ROTATION_DEADLINE; zero: 25s
	DryRun      bool          // ROTATION_DRY_RUN

	// LockContainer is ROTATION_LOCK_CONTAINER: the https URL of the blob
	// container whose leases lock each key while it is rotated, or a
	// container name in the account of LockConnection. Zero: rotations
	// are serialised within this process only.
	LockContainer  string
	LockConnection string // AzureWebJobsStorage's connection string, when LockContainer is a name

	// ReconcileSchedule is ROTATION_RECONCILE_SCHEDULE, read by the host
	// for the Reconcile timer; checked here so that a typo is named at
	// start. Zero: not set; the host then leaves the Reconcile function in
	// error, and serve warns of it.
	ReconcileSchedule string

	LogLevel  slog.Level // LOG_LEVEL: debug, info (zero), warn, error
	LogFormat string     // LOG_FORMAT: "json", "text", or zero: text on a terminal, else json
}

// settingsError is a bad setting: the process says so in one line and
// exits with exitUsage.
type settingsError struct {
	name string
	err  error
}

func (e *settingsError) Error() string { return "setting " + e.name + ": " + e.err.Error() }
func (e *settingsError) Unwrap() error { return e.err }

// loadSettings reads and checks every setting. needTargets and needPort
// say what the command requires. It reads files only for
// ROTATION_TARGETS_FILE.
func loadSettings(getenv func(string) string, needTargets, needPort bool) (Settings, error) {
	var s Settings
	bad := func(name string, err error) (Settings, error) {
		return Settings{}, &settingsError{name: name, err: err}
	}

	if v := getenv("FUNCTIONS_CUSTOMHANDLER_PORT"); v != "" || needPort {
		port, err := strconv.Atoi(v)
		if err != nil || port < 1 || port > 65535 {
			return bad("FUNCTIONS_CUSTOMHANDLER_PORT", fmt.Errorf("want a port number, got %q (the Functions host sets it)", v))
		}
		s.Port = port
	}
	s.ClientID = strings.TrimSpace(getenv("AZURE_CLIENT_ID"))
	s.IdentityEndpoint = strings.TrimSpace(getenv("IDENTITY_ENDPOINT"))

	if needTargets {
		t, src, err := loadTargets(getenv)
		if err != nil {
			return bad(src, err)
		}
		s.Targets, s.TargetsSource = t, src
	}

	var err error
	if s.ARMEndpoint, err = httpsURL(getenv("ROTATION_ARM_ENDPOINT")); err != nil {
		return bad("ROTATION_ARM_ENDPOINT", err)
	}
	if s.ARMAudience, err = httpsURL(getenv("ROTATION_ARM_AUDIENCE")); err != nil {
		return bad("ROTATION_ARM_AUDIENCE", err)
	}
	if s.LockContainer, s.LockConnection, err = lockContainer(getenv); err != nil {
		return bad("ROTATION_LOCK_CONTAINER", err)
	}
	if v := getenv("ROTATION_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 256 {
			return bad("ROTATION_CONCURRENCY", fmt.Errorf("want a number from 1 to 256, got %q", v))
		}
		s.Concurrency = n
	}
	if v := getenv("ROTATION_DEADLINE"); v != "" {
		d, err := parseDeadline(v)
		if err != nil {
			return bad("ROTATION_DEADLINE", err)
		}
		s.Deadline = d
	}
	if v := getenv("ROTATION_DRY_RUN"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return bad("ROTATION_DRY_RUN", fmt.Errorf("want true or false, got %q", v))
		}
		s.DryRun = b
	}
	if v := getenv("ROTATION_RECONCILE_SCHEDULE"); v != "" {
		if err := checkSchedule(v); err != nil {
			return bad("ROTATION_RECONCILE_SCHEDULE", err)
		}
		s.ReconcileSchedule = v
	}
	if v := getenv("LOG_LEVEL"); v != "" {
		if err := s.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return bad("LOG_LEVEL", fmt.Errorf("want debug, info, warn or error, got %q", v))
		}
	}
	switch v := strings.ToLower(getenv("LOG_FORMAT")); v {
	case "", "json", "text":
		s.LogFormat = v
	default:
		return bad("LOG_FORMAT", fmt.Errorf("want json or text, got %q", v))
	}
	return s, nil
}

// loadTargets reads the subscription map from ROTATION_TARGETS (inline
// JSON) or ROTATION_TARGETS_FILE (a path); exactly one must be set. The
// second result names the setting used.
func loadTargets(getenv func(string) string) (rotation.Targets, string, error) {
	inline, file := strings.TrimSpace(getenv("ROTATION_TARGETS")), strings.TrimSpace(getenv("ROTATION_TARGETS_FILE"))
	switch {
	case inline != "" && file != "":
		return rotation.Targets{}, "ROTATION_TARGETS", errors.New("set ROTATION_TARGETS or ROTATION_TARGETS_FILE, not both")
	case inline == "" && file == "":
		return rotation.Targets{}, "ROTATION_TARGETS", errors.New(`missing: set it to the subscription map, {"targets":[{"key":"https://{vault}/keys/{name}","servers":["/subscriptions/…"]}]}, or set ROTATION_TARGETS_FILE`)
	}

	name, data := "ROTATION_TARGETS", []byte(inline)
	if file != "" {
		name = "ROTATION_TARGETS_FILE"
		b, err := os.ReadFile(file)
		if err != nil {
			return rotation.Targets{}, name, fmt.Errorf("read subscription map: %w", err)
		}
		data = b
	}
	t, err := rotation.ParseTargets(data)
	if err != nil {
		return rotation.Targets{}, name, err
	}
	if t.Len() == 0 {
		return rotation.Targets{}, name, errors.New("the subscription map lists no keys")
	}
	return t, name, nil
}

// httpsURL checks an optional endpoint setting: an absolute https URL.
func httpsURL(v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("want an https URL, got %q", v)
	}
	return v, nil
}

// lockContainer reads ROTATION_LOCK_CONTAINER: an https container URL,
// reached with the app's credential, or a container name in the host's
// own storage account as AzureWebJobsStorage names it: a connection
// string (UseDevelopmentStorage=true is Azurite's), or, for an
// identity-based connection, AzureWebJobsStorage__blobServiceUri or
// __accountName, reached with the app's credential.
func lockContainer(getenv func(string) string) (container, conn string, err error) {
	v := strings.TrimSpace(getenv("ROTATION_LOCK_CONTAINER"))
	switch {
	case v == "":
		return "", "", nil
	case strings.Contains(v, "://"):
		v, err = httpsURL(v)
		return v, "", err
	}
	if err := checkContainerName(v); err != nil {
		return "", "", err
	}
	conn = strings.TrimSpace(getenv("AzureWebJobsStorage"))
	switch {
	case strings.EqualFold(strings.TrimSuffix(conn, ";"), "UseDevelopmentStorage=true"):
		return v, developmentStorage, nil
	case strings.Contains(conn, "AccountName="):
		return v, conn, nil
	case getenv("AzureWebJobsStorage__blobServiceUri") != "":
		u, err := httpsURL(strings.TrimSpace(getenv("AzureWebJobsStorage__blobServiceUri")))
		if err != nil {
			return "", "", fmt.Errorf("%q is a container name in the account of AzureWebJobsStorage__blobServiceUri: %w", v, err)
		}
		return strings.TrimSuffix(u, "/") + "/" + v, "", nil
	case getenv("AzureWebJobsStorage__accountName") != "":
		return "https://" + strings.TrimSpace(getenv("AzureWebJobsStorage__accountName")) + ".blob.core.windows.net/" + v, "", nil
	}
	return "", "", fmt.Errorf("%q is a container name, which needs AzureWebJobsStorage (a connection string) or "+
		"AzureWebJobsStorage__accountName to say its account; or give an https container URL", v)
}

// developmentStorage is what UseDevelopmentStorage=true stands for: Azurite
// on its default port with its published development account.
const developmentStorage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"

// checkContainerName applies Azure's rules for a blob container's name: 3
// to 63 lowercase letters, digits and single hyphens, starting and ending
// with a letter or digit.
func checkContainerName(v string) error {
	ok := len(v) >= 3 && len(v) <= 63 && v[0] != '-' && v[len(v)-1] != '-' && !strings.Contains(v, "--")
	for _, c := range v {
		ok = ok && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-')
	}
	if !ok {
		return fmt.Errorf("%q is not a blob container name: want 3 to 63 lowercase letters, digits and single hyphens, "+
			"starting and ending with a letter or digit; or give an https container URL", v)
	}
	return nil
}

// Bounds of ROTATION_DEADLINE: below a second a rotation cannot make one
// call to Azure; beyond ten minutes it outlives any invocation the host
// allows (functionTimeout is at most 10 minutes on Consumption).
const (
	minDeadline = time.Second
	maxDeadline = 10 * time.Minute
)

// parseDeadline accepts a Go duration ("25s", "1m") or whole seconds,
// from minDeadline to maxDeadline.
func parseDeadline(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, fmt.Errorf("want a duration such as 25s, got %q", v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < minDeadline || d > maxDeadline {
		return 0, fmt.Errorf("want a duration from 1s to 10m, got %q", v)
	}
	return d, nil
}

// scheduleHelp is what a schedule must look like.
const scheduleHelp = `six NCRONTAB fields ("0 */30 * * * *") or a TimeSpan (hh:mm:ss, or d.hh:mm:ss)`

// checkSchedule checks a timer schedule the way the host reads it: an
// NCRONTAB expression of six fields ("0 */30 * * * *") or a TimeSpan
// ("01:00:00").
// https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions
func checkSchedule(v string) error {
	fields := strings.Fields(v)
	switch {
	case len(fields) == 6:
		for i, f := range fields {
			if err := cronFields[i].check(f); err != nil {
				return fmt.Errorf("NCRONTAB %q: %s field %q: %w", v, cronFields[i].name, f, err)
			}
		}
		return nil
	case len(fields) == 1 && strings.Contains(v, ":"):
		return checkTimeSpan(v)
	}
	return fmt.Errorf("want %s, got %q", scheduleHelp, v)
}

// cronField is one field of an NCRONTAB expression: its range and, for
// months and days of the week, the English names NCrontab also takes
// (any leading part, in any case: "Jan", "mon").
type cronField struct {
	name     string
	min, max int
	names    []string
	nameWord string // "a month's name"
}

var cronFields = [6]cronField{
	{name: "second", min: 0, max: 59},
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day", min: 1, max: 31},
	{name: "month", min: 1, max: 12, nameWord: "a month's name", names: []string{"January", "February", "March",
		"April", "May", "June", "July", "August", "September", "October", "November", "December"}},
	{name: "day-of-week", min: 0, max: 6, nameWord: "a day's name", names: []string{"Sunday", "Monday", "Tuesday",
		"Wednesday", "Thursday", "Friday", "Saturday"}},
}

// check reads f as NCrontab does: a list of items, each *, a value or a
// range a-b, optionally stepped with /n.
func (c cronField) check(f string) error {
	for _, item := range strings.Split(f, ",") {
		if item == "" {
			return errors.New("an empty item in the list")
		}
		rng, step, stepped := strings.Cut(item, "/")
		if stepped {
			if n, err := strconv.Atoi(step); err != nil || n < 1 {
				return fmt.Errorf("step %s: want a whole number from 1", step)
			}
		}
		if rng == "*" {
			continue
		}
		lo, hi, isRange := strings.Cut(rng, "-")
		if err := c.value(lo); err != nil {
			return err
		}
		if isRange {
			if err := c.value(hi); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c cronField) value(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		if n < c.min || n > c.max {
			return fmt.Errorf("%d is out of range %d to %d", n, c.min, c.max)
		}
		return nil
	}
	for _, name := range c.names {
		if v != "" && len(v) <= len(name) && strings.EqualFold(name[:len(v)], v) {
			return nil
		}
	}
	if c.names != nil {
		return fmt.Errorf("want *, a number from %d to %d or %s, a range a-b, a list a,b or a step */n", c.min, c.max, c.nameWord)
	}
	return fmt.Errorf("want *, a number from %d to %d, a range a-b, a list a,b or a step */n", c.min, c.max)
}

// checkTimeSpan reads a TimeSpan schedule as .NET's TimeSpan.Parse does:
// [d.]hh:mm[:ss[.fraction]], or d:hh:mm:ss in four parts; an interval of
// zero never fires. .NET also reads three parts whose first is 24 or more
// as d:hh:mm ("25:00:00" is 25 days); that is refused, since whoever
// wrote it meant hours.
func checkTimeSpan(v string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("TimeSpan %q: %s; want %s", v, fmt.Sprintf(format, args...), scheduleHelp)
	}
	rest := v
	days := 0
	if d, r, ok := strings.Cut(rest, "."); ok && !strings.Contains(d, ":") {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return bad("days %q are not a whole number", d)
		}
		days, rest = n, r
	}
	parts := strings.Split(rest, ":")
	total := 0 // nonzero once any part is
	if last := len(parts) - 1; last >= 2 {
		if whole, frac, ok := strings.Cut(parts[last], "."); ok {
			n, err := strconv.Atoi(frac)
			if err != nil || n < 0 {
				return bad("fraction %q is not a number", frac)
			}
			total, parts[last] = n, whole
		}
	}
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return bad("%q is not a whole number", p)
		}
		nums[i] = n
	}
	names := []string{"hours", "minutes", "seconds"}
	switch {
	case len(nums) == 4 && days == 0:
		days, nums = nums[0], nums[1:]
	case len(nums) == 3 && days == 0 && nums[0] >= 24:
		return bad("the host reads three parts from 24 up as d:hh:mm, so %d would be days, not hours; "+
			"write %d.%02d:%02d:%02d for %d hours, and days as d.hh:mm:ss",
			nums[0], nums[0]/24, nums[0]%24, nums[1], nums[2], nums[0])
	case len(nums) < 2 || len(nums) > 3:
		return bad("want two or three parts separated by colons")
	}
	total += days
	for i, n := range nums {
		max := 59
		if i == 0 {
			max = 23
		}
		if n > max {
			return bad("%s %d is out of range 0 to %d", names[i], n, max)
		}
		total += n
	}
	if total == 0 {
		return bad("an interval of zero")
	}
	return nil
}
