// Package azurite starts Azurite, the Azure Storage emulator, for
// tests that need real blob storage.
//
// Start runs azurite-blob in memory on a free loopback port and stops
// it when the test ends:
//
//	az := azurite.Start(t)
//	client, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
//
// The binary is AZURITE_BIN, else .tools/node_modules/.bin/azurite-blob
// in the module root (or a directory between it and the working
// directory), else azurite-blob on PATH. Without it a test is skipped,
// except when AZURITE_REQUIRED or CI is set: there it fails, so a
// missing emulator never passes for green. scripts/test, which installs
// Azurite, sets AZURITE_REQUIRED.
package azurite

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmkrotator/cmkrotator/internal/logcheck"
)

// The well-known development account every Azurite serves.
const (
	AccountName = "devstoreaccount1"
	AccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Version is the Azurite release the project installs and tests with.
const Version = "3.35.0"

// InstallCommand installs Version where FindBinary looks first; run it
// in the module root.
const InstallCommand = "npm install --prefix .tools azurite@" + Version

// binaryName is Azurite's blob-only entry point.
const binaryName = "azurite-blob"

// startTimeout bounds how long Azurite may take to listen; node and
// Azurite's in-memory stores start in about a second.
const startTimeout = 30 * time.Second

// stopTimeout is how long Azurite gets to exit on an interrupt before
// it is killed.
const stopTimeout = 5 * time.Second

// ErrNotFound means no Azurite binary was found.
var ErrNotFound = errors.New("azurite-blob not found")

// listening matches the line Azurite prints once it accepts requests.
var listening = regexp.MustCompile(`successfully listens on (http://\S+)`)

// Azurite is a running azurite-blob process.
type Azurite struct {
	endpoint string // http://127.0.0.1:P
}

// Start starts azurite-blob for t, waits until it answers, and stops it
// in t.Cleanup. When no binary is found it skips t, or fails it when
// AZURITE_REQUIRED or CI is set. AccountKey is given to logcheck.Secret:
// no log may show it.
func Start(t testing.TB) *Azurite {
	t.Helper()
	logcheck.Secret(t, AccountKey)
	bin, err := FindBinary()
	if errors.Is(err, ErrNotFound) {
		msg := fmt.Sprintf("%v: install it in the module root with %q, or set AZURITE_BIN", err, InstallCommand)
		if os.Getenv("AZURITE_REQUIRED") != "" || os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if err != nil {
		t.Fatalf("find azurite: %v", err)
	}

	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1",
		"--blobPort", "0",
		"--inMemoryPersistence",
		"--skipApiVersionCheck",
		"--loose",
		"--silent",
		"--disableTelemetry",
	)
	cmd.Dir = t.TempDir() // Azurite may leave files in its working directory
	out := &tail{}
	endpoint := make(chan string, 1)
	cmd.Stdout = &watcher{out: out, endpoint: endpoint}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start azurite %s: %v", bin, err)
	}

	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { stop(cmd, exited) })

	a := &Azurite{}
	select {
	case a.endpoint = <-endpoint:
	case <-exited:
		t.Fatalf("azurite exited before listening: %s", out)
	case <-time.After(startTimeout):
		t.Fatalf("azurite did not listen within %v: %s", startTimeout, out)
	}
	if err := a.ping(); err != nil {
		t.Fatalf("azurite does not answer: %v: %s", err, out)
	}
	return a
}

// FindBinary returns the azurite-blob to run: AZURITE_BIN, else
// .tools/node_modules/.bin/azurite-blob in the working directory or a
// parent up to the one holding go.mod, else azurite-blob on PATH. It
// returns an error wrapping ErrNotFound when there is none.
func FindBinary() (string, error) {
	if bin := os.Getenv("AZURITE_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%w: AZURITE_BIN: %w", ErrNotFound, err)
		}
		return bin, nil
	}

	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find azurite: %w", err)
	}
	for {
		bin := filepath.Join(dir, ".tools", "node_modules", ".bin", binaryName)
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}

	if bin, err := exec.LookPath(binaryName); err == nil {
		return bin, nil
	}
	return "", ErrNotFound
}

// BlobEndpoint is the account's blob service URL,
// http://127.0.0.1:P/devstoreaccount1.
func (a *Azurite) BlobEndpoint() string { return a.endpoint + "/" + AccountName }

// ConnectionString is a storage connection string for the account.
func (a *Azurite) ConnectionString() string {
	return "DefaultEndpointsProtocol=http;AccountName=" + AccountName +
		";AccountKey=" + AccountKey + ";BlobEndpoint=" + a.BlobEndpoint() + ";"
}

// AccountName is the storage account's name.
func (a *Azurite) AccountName() string { return AccountName }

// AccountKey is the storage account's shared key.
func (a *Azurite) AccountKey() string { return AccountKey }

// ping checks that Azurite answers HTTP; any status will do.
func (a *Azurite) ping() error {
	client := &http.Client{Timeout: startTimeout}
	resp, err := client.Get(a.BlobEndpoint() + "?comp=list")
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	return nil
}

// watcher copies Azurite's output into out and sends the endpoint
// once Azurite reports it.
type watcher struct {
	out      *tail
	endpoint chan<- string
	partial  []byte
	sent     bool
}

func (w *watcher) Write(p []byte) (int, error) {
	_, _ = w.out.Write(p)
	w.partial = append(w.partial, p...)
	for {
		line, rest, ok := bytes.Cut(w.partial, []byte("\n"))
		if !ok {
			break
		}
		if m := listening.FindSubmatch(line); m != nil && !w.sent {
			w.endpoint <- strings.TrimSuffix(string(m[1]), "/")
			w.sent = true
		}
		w.partial = rest
	}
	return len(p), nil
}

// stop interrupts Azurite and kills it if it does not exit in time.
func stop(cmd *exec.Cmd, exited <-chan struct{}) {
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// tail keeps the last few kilobytes of output for error messages.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 4096

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = t.buf[len(t.buf)-tailSize:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
