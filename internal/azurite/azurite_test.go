package azurite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/internal/azurite"
)

// deadLetter is a blob as Event Grid writes it: an array of events
// with their delivery outcome.
const deadLetter = `[{
  "id": "3f6c1f0e-8a43-4b8e-9d44-6c1e2a7d0b11",
  "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v1",
  "subject": "cmk",
  "eventType": "Microsoft.KeyVault.KeyNewVersionCreated",
  "eventTime": "2026-01-02T03:04:05Z",
  "data": {"Id": "https://v1.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef", "VaultName": "v1", "ObjectType": "Key", "ObjectName": "cmk", "Version": "0123456789abcdef0123456789abcdef", "NBF": null, "EXP": null},
  "dataVersion": "1",
  "metadataVersion": "1",
  "deadLetterReason": "MaxDeliveryAttemptsExceeded",
  "deliveryAttempts": 30,
  "lastDeliveryOutcome": "Probation",
  "publishTime": "2026-01-02T03:04:06.1234567Z",
  "lastDeliveryAttemptTime": "2026-01-03T03:04:06.7654321Z"
}]`

func guid(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func TestDeadLetterBlobRoundTrip(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()

	client, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	if got, want := client.URL(), az.BlobEndpoint()+"/"; got != want {
		t.Errorf("got client URL %q, want %q", got, want)
	}
	if _, err := client.CreateContainer(ctx, "deadletters", nil); err != nil {
		t.Fatalf("create container: %v", err)
	}

	name := "SUB-NAME/2026/1/2/3/" + guid(t) + ".json"
	if _, err := client.UploadBuffer(ctx, "deadletters", name, []byte(deadLetter), nil); err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	other := "OTHER-SUB/2026/1/2/3/" + guid(t) + ".json"
	if _, err := client.UploadBuffer(ctx, "deadletters", other, []byte("[]"), nil); err != nil {
		t.Fatalf("upload %s: %v", other, err)
	}

	blob := client.ServiceClient().NewContainerClient("deadletters").NewBlobClient(name)
	if _, err := blob.SetMetadata(ctx, map[string]*string{"replayed": to.Ptr("2026-01-04T00:00:00Z")}, nil); err != nil {
		t.Fatalf("set metadata: %v", err)
	}

	// Listed by the subscription's prefix, with metadata.
	var listed []string
	pager := client.NewListBlobsFlatPager("deadletters", &azblob.ListBlobsFlatOptions{
		Prefix:  to.Ptr("SUB-NAME/"),
		Include: container.ListBlobsInclude{Metadata: true},
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("list blobs: %v", err)
		}
		for _, b := range page.Segment.BlobItems {
			listed = append(listed, fmt.Sprintf("%s replayed=%s", *b.Name, deref(lookup(b.Metadata, "replayed"))))
		}
	}
	if diff := cmp.Diff([]string{name + " replayed=2026-01-04T00:00:00Z"}, listed); diff != "" {
		t.Errorf("listed blobs (-want +got):\n%s", diff)
	}

	props, err := blob.GetProperties(ctx, nil)
	if err != nil {
		t.Fatalf("get properties: %v", err)
	}
	if got := deref(lookup(props.Metadata, "replayed")); got != "2026-01-04T00:00:00Z" {
		t.Errorf("got metadata replayed=%q, want 2026-01-04T00:00:00Z", got)
	}

	resp, err := client.DownloadStream(ctx, "deadletters", name, nil)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read blob: %v", err)
	}
	if !bytes.Equal(got, []byte(deadLetter)) {
		t.Errorf("got blob %s, want %s", got, deadLetter)
	}
}

// lookup finds a metadata key case-insensitively: the service keeps
// its case but HTTP headers may not.
func lookup(m map[string]*string, key string) *string {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func TestAccount(t *testing.T) {
	az := azurite.Start(t)
	if az.AccountName() != "devstoreaccount1" || az.AccountKey() != azurite.AccountKey {
		t.Errorf("got account %q, want devstoreaccount1 and the well-known key", az.AccountName())
	}
	if !strings.HasPrefix(az.BlobEndpoint(), "http://127.0.0.1:") ||
		!strings.HasSuffix(az.BlobEndpoint(), "/devstoreaccount1") {
		t.Errorf("got blob endpoint %q, want http://127.0.0.1:P/devstoreaccount1", az.BlobEndpoint())
	}
	if !strings.Contains(az.ConnectionString(), "BlobEndpoint="+az.BlobEndpoint()+";") {
		t.Errorf("connection string %q does not name the blob endpoint", az.ConnectionString())
	}
}

func TestFindBinary(t *testing.T) {
	present := filepath.Join(t.TempDir(), "azurite-blob")
	if err := os.WriteFile(present, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     string
		want    string
		wantErr error
	}{
		{"from AZURITE_BIN", present, present, nil},
		{"AZURITE_BIN missing", filepath.Join(t.TempDir(), "nope"), "", azurite.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AZURITE_BIN", tt.env)
			got, err := azurite.FindBinary()
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}

	t.Run("from the module's .tools", func(t *testing.T) {
		root := t.TempDir()
		bin := filepath.Join(root, ".tools", "node_modules", ".bin", "azurite-blob")
		sub := filepath.Join(root, "a", "b")
		for _, dir := range []string{filepath.Dir(bin), sub} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{bin, filepath.Join(root, "go.mod")} {
			if err := os.WriteFile(f, nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("AZURITE_BIN", "")
		t.Chdir(sub)
		if got, err := azurite.FindBinary(); err != nil || got != bin {
			t.Errorf("got %q, %v; want %q", got, err, bin)
		}
	})
}

// recorder is a testing.TB that records how Start ended the test.
type recorder struct {
	testing.TB
	ended string
}

func (r *recorder) Helper() {}

func (r *recorder) end(kind string, args ...any) {
	r.ended = kind + ": " + fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Skip(args ...any)                  { r.end("skip", args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.end("skip", fmt.Sprintf(format, args...)) }
func (r *recorder) Fatal(args ...any)                 { r.end("fatal", args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.end("fatal", fmt.Sprintf(format, args...)) }

func TestMissingAzurite(t *testing.T) {
	tests := []struct {
		required, ci string
		want         string
	}{
		{"", "", "skip: "},
		{"", "true", "fatal: "},
		{"1", "", "fatal: "},
	}
	for _, tt := range tests {
		t.Run("AZURITE_REQUIRED="+tt.required+",CI="+tt.ci, func(t *testing.T) {
			// No AZURITE_BIN, no .tools up to go.mod, nothing on PATH.
			root := t.TempDir()
			if err := os.WriteFile(filepath.Join(root, "go.mod"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Chdir(root)
			t.Setenv("AZURITE_BIN", "")
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tt.ci)
			t.Setenv("AZURITE_REQUIRED", tt.required)

			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				azurite.Start(r)
			}()
			<-done

			if !strings.HasPrefix(r.ended, tt.want) || !strings.Contains(r.ended, azurite.InstallCommand) {
				t.Errorf("got %q, want %s with the install command", r.ended, tt.want)
			}
		})
	}
}
