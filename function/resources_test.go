package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/fakehost"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
)

// TestResidentMemory measures the built binary's peak resident memory
// with /usr/bin/time -v: idle after start, and serving 200 concurrent
// Event Grid invocations that rotate 50 servers. It runs only when
// RESOURCES_BINARY names the binary (scripts/bench sets it).
func TestResidentMemory(t *testing.T) {
	bin := os.Getenv("RESOURCES_BINARY")
	if bin == "" {
		t.Skip("RESOURCES_BINARY not set; scripts/bench runs this")
	}
	emu, err := emulator.Start(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	vault := emu.AddVault("kv")
	v1, err := vault.CreateKey("cmk", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 50 {
		id, err := emu.PutServer(emulator.ServerSpec{Name: fmt.Sprintf("relay-%d", i), KeyURL: v1.KID})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	targets, _ := json.Marshal(map[string]any{"targets": []any{map[string]any{"key": vault.URL() + "/keys/cmk", "servers": ids}}})
	env := []string{
		"IDENTITY_ENDPOINT=" + emu.IdentityEndpoint(), "IDENTITY_HEADER=" + emu.IdentityHeader(),
		"AZURE_CLIENT_ID=" + emu.ClientID(), "SSL_CERT_FILE=" + emu.CertFile(),
		"ROTATION_ARM_ENDPOINT=" + emu.ARMEndpoint(), "ROTATION_TARGETS=" + string(targets),
		"LOG_LEVEL=warn",
	}

	idle := peakRSS(t, bin, env, func(*fakehost.Host) {})
	v2, err := vault.RotateKey("cmk")
	if err != nil {
		t.Fatal(err)
	}
	event, _ := json.Marshal(emu.KeyEvent(emulator.KeyNewVersionCreated, v2, "kv"))
	var failed int
	load := peakRSS(t, bin, env, func(h *fakehost.Host) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 200 {
			wg.Go(func() {
				res, err := h.EventGrid(context.Background(), "KeyNewVersionCreated", event, fakehost.EventOptions{})
				if err != nil || !res.Succeeded {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	})
	for _, id := range ids {
		if got, _ := emu.ServerKeyURL(id); got != v2.KID {
			t.Errorf("%s: got %s, want %s", id, got, v2.KID)
		}
	}
	t.Logf("resources: idle_rss_kib=%d load_rss_kib=%d invocations=200 failed=%d servers=%d", idle, load, failed, len(ids))
	if failed > 0 {
		t.Errorf("got %d failed invocations, want none", failed)
	}
}

// peakRSS runs bin serve under /usr/bin/time -v, waits until it answers,
// runs work, stops it with SIGTERM and returns its maximum resident set
// size in KiB.
func peakRSS(t *testing.T, bin string, env []string, work func(*fakehost.Host)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	var stderr bytes.Buffer
	cmd := exec.Command("/usr/bin/time", "-v", bin, "serve")
	cmd.Env = append(env, "FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logcheck.Writer(t, nil), logcheck.Writer(t, &stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	app, err := fakehost.LoadApp("..")
	if err != nil {
		t.Fatal(err)
	}
	h, err := fakehost.New(fmt.Sprintf("http://127.0.0.1:%d", port), app, fakehost.Options{})
	if err == nil {
		err = h.WaitReady(context.Background())
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("handler not ready: %v\n%s", err, stderr.String())
	}
	work(h)

	// time forwards nothing; signal its child, the handler.
	if err := exec.Command("pkill", "-TERM", "-P", strconv.Itoa(cmd.Process.Pid)).Run(); err != nil {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	cmd.Wait()
	m := regexp.MustCompile(`Maximum resident set size \(kbytes\): (\d+)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no maximum resident set size in:\n%s", stderr.String())
	}
	kib, _ := strconv.Atoi(m[1])
	return kib
}
