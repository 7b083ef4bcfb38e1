package azure_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cmkrotator/cmkrotator/azure"
	"github.com/cmkrotator/cmkrotator/emulator"
	"github.com/cmkrotator/cmkrotator/internal/azurite"
	"github.com/cmkrotator/cmkrotator/internal/logcheck"
	"github.com/cmkrotator/cmkrotator/internal/testenv"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A lock container nothing answers for: the lock's deadline ends it
// while azcore waits to retry, and the error still says why the tries
// failed. No release is attempted, since no request ever connected.
func TestBlobLocker_UnreachableSaysWhy(t *testing.T) {
	addr := closedPort(t)
	conn := "DefaultEndpointsProtocol=http;AccountName=" + azurite.AccountName + ";AccountKey=" +
		azurite.AccountKey + ";BlobEndpoint=http://" + addr + "/" + azurite.AccountName + ";"
	logs := logcheck.New(t)
	l, err := azure.NewBlobLockerFromConnectionString(conn, "locks", &azure.BlobLockerOptions{Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}

	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := l.Lock(ctx, "kv1.vault.azure.net/cmk")
		if err == nil {
			t.Fatal("got the lock, want an error")
		}
		if !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("got %q, want it to say the connection was refused", err)
		}
	})
	if strings.Contains(logs.String(), "release") {
		t.Errorf("got a release attempt for a lease never reached:\n%s", logs)
	}
}

// Resource Manager answers 503 to every try until the caller's deadline
// ends the read: the error names the 503, not only the deadline.
func TestFluidRelay_DeadlineSaysLastTry(t *testing.T) {
	emu := testenv.Start(t)
	v := emu.AddVault("kv")
	v1, err := v.CreateKey("cmk", emulator.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := testenv.Servers(t, emu, 1, v1.KID)
	emu.InjectFault(emulator.Fault{Service: "arm", Method: http.MethodGet, Status: http.StatusServiceUnavailable})

	synctest.Test(t, func(t *testing.T) {
		_, _, relays := testenv.Adapters(t, emu, azcore.ClientOptions{Transport: emu.InProcessTransport().(policy.Transporter)})
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		_, err := relays.Get(ctx, ids[0])
		if err == nil {
			t.Fatal("got the server, want an error")
		}
		if got := err.Error(); !strings.Contains(got, "deadline") || !strings.Contains(got, "503") {
			t.Errorf("got %q, want the deadline and the last try's 503", got)
		}
	})
}
