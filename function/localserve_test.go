package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cmkrotator/cmkrotator/internal/logcheck"
)

// localShown are the lines of cmkrotator local, while it keeps serving,
// that show a person the function key of this run and the identity
// header of its own emulator, for the curl lines and the shell to try:
// output to copy, not log lines. Only they are left out of the scan.
// (The in-process tests keep their own copy.)
var localShown = []string{`curl -s `, `export IDENTITY_ENDPOINT=`}

// TestLocalServing runs cmkrotator local as a person would, follows every
// line it prints to try (curl, the command line, the control surface),
// then interrupts it as Ctrl-C does: it exits 0 and leaves no work
// folder behind.
func TestLocalServing(t *testing.T) {
	tmp := t.TempDir()
	cmd := exec.Command(build(t), "local")
	cmd.Env = []string{"TMPDIR=" + tmp, "LOG_FORMAT=json"}
	var stderr syncBuffer
	cmd.Stderr = logcheck.Writer(t, &stderr)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := io.TeeReader(pipe, logcheck.Writer(t, nil, localShown...))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })

	// Read until the last line of the instructions; drain the rest.
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), "Stop with Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if len(lines) == 0 || !strings.Contains(lines[len(lines)-1], "Stop with Ctrl-C") {
		t.Fatalf("got output\n%s\nlogs:\n%s\nwant the lines to try", strings.Join(lines, "\n"), stderr.String())
	}

	curl := regexp.MustCompile(`^\s*curl -s (?:-X (\w+) )?-H "x-functions-key: ([^"]+)" (\S+)(?: -H '[^']*')?(?: -d '([^']*)'| --data-binary @(\S+))?(?: -w '[^']*')?$`)
	// A new key version on the control surface, then its event, built by
	// the control surface, piped to the host's Event Grid webhook.
	controlPost := regexp.MustCompile(`^curl -s -X POST (\S+)$`)
	delivery := regexp.MustCompile(`^curl -s -X POST (\S+) -d '([^']*)' \| curl -s -X POST -H "x-functions-key: ([^"]+)" "(\S+)" -H '(aeg-event-type): (\w+)' .*--data-binary @- -w '[^']*'$`)
	wantStatus := regexp.MustCompile(`: (\d{3})$`)
	wantExit := regexp.MustCompile(`^\s*# exit (\d):`)
	var env []string
	var control string
	keys := map[string]bool{}
	built := false
	curls, commands, deliveries := 0, 0, 0
	for i, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case curl.MatchString(l):
			curls++
			m := curl.FindStringSubmatch(l)
			method, key, url, body := m[1], m[2], m[3], m[4]
			if method == "" {
				method = http.MethodGet
			}
			keys[key] = true
			logcheck.Secret(t, key)
			if m[5] != "" {
				b, err := os.ReadFile(m[5])
				if err != nil {
					t.Fatalf("%s: %v", l, err)
				}
				body = string(b)
			}
			want := http.StatusOK
			if c := wantStatus.FindStringSubmatch(lines[i-1]); c != nil {
				want, _ = strconv.Atoi(c[1])
			}
			// The host refuses a call without the function key.
			req, _ := http.NewRequest(method, url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s without the key: got %d, want 401", l, resp.StatusCode)
			}
			req, _ = http.NewRequest(method, url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("x-functions-key", key)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s\n(under %q): got %d %s, want %d", l, lines[i-1], resp.StatusCode, got, want)
			}
		case controlPost.MatchString(l):
			resp, err := http.Post(controlPost.FindStringSubmatch(l)[1], "application/json", nil)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: got %d, want 200", l, resp.StatusCode)
			}
		case delivery.MatchString(l):
			deliveries++
			m := delivery.FindStringSubmatch(l)
			resp, err := http.Post(m[1], "application/json", strings.NewReader(m[2]))
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			event, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			req, _ := http.NewRequest(http.MethodPost, m[4], bytes.NewReader(event))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("x-functions-key", m[3])
			req.Header.Set(m[5], m[6])
			if resp, err = http.DefaultClient.Do(req); err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("%s: got %d for event %s, want 202", l, resp.StatusCode, event)
			}
		case strings.HasPrefix(l, "export "):
			words := strings.Fields(strings.TrimPrefix(l, "export ") + " " + lines[i+1])
			for _, w := range words {
				if strings.Contains(w, "=") {
					env = append(env, w)
				}
				if h, ok := strings.CutPrefix(w, "IDENTITY_HEADER="); ok {
					logcheck.Secret(t, h)
				}
			}
		case l == "go build -o cmkrotator ./function":
			built = true
		case strings.HasPrefix(l, "go run "):
			t.Errorf("got %q, want the built binary: go run turns every failure into exit 1", l)
		case strings.HasPrefix(l, "./cmkrotator "):
			commands++
			args := strings.Fields(strings.TrimPrefix(l, "./cmkrotator "))
			want := 0
			if c := wantExit.FindStringSubmatch(lines[i-1]); c != nil {
				want = int(c[1][0] - '0')
			}
			code, out, errOut := runBinary(t, append(env, "LOG_FORMAT=json"), args...)
			if code != want {
				t.Errorf("%s: got exit %d\n%s%s\nwant %d", l, code, out, errOut, want)
			}
		case strings.HasPrefix(l, "Emulator control surface: "):
			control = strings.Fields(strings.TrimPrefix(l, "Emulator control surface: "))[0]
		}
	}
	if len(keys) != 1 || !strings.Contains(strings.Join(lines, "\n"), "The key is this run's own") {
		t.Errorf("got keys %v, want one key, said to be this run's own", keys)
	}
	if !built {
		t.Error("got no line building the binary the command lines run")
	}
	if curls < 6 || commands < 2 || deliveries != 1 || len(env) < 6 {
		t.Errorf("got %d curl lines, %d commands, %d deliveries, environment %v; want them all printed:\n%s",
			curls, commands, deliveries, env, strings.Join(lines, "\n"))
	}

	resp, err := http.Get(control + "/")
	if err != nil {
		t.Fatal(err)
	}
	var index []struct{ Method, Path, Does string }
	err = json.NewDecoder(resp.Body).Decode(&index)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || len(index) == 0 {
		t.Errorf("GET %s/: got %d, %v, %d routes; want the index of routes", control, resp.StatusCode, err, len(index))
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after interrupt: got %v, want exit 0\nlogs:\n%s", err, stderr.String())
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "cmkrotator-local-*")); len(left) > 0 {
		t.Errorf("got %v left behind, want the work folder removed", left)
	}
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test
// reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
