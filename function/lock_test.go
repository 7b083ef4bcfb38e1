package main_test

import (
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/cmkrotator/cmkrotator/internal/azurite"
)

// TestRotateCommand_LocksTheKey: with ROTATION_LOCK_CONTAINER naming a
// container in the host's storage (Azurite here), the command rotates
// under a lease on the key's blob and releases it.
func TestRotateCommand_LocksTheKey(t *testing.T) {
	w := seed(t)
	az := azurite.Start(t)
	env := append(w.env(t, w.emu.ClientID()),
		"AzureWebJobsStorage="+az.ConnectionString(), "ROTATION_LOCK_CONTAINER=locks")

	code, out, errOut := runBinary(t, env, "rotate", "--json", w.key)
	if code != 0 {
		t.Fatalf("got exit %d\n%s%s\nwant 0", code, out, errOut)
	}
	for _, id := range w.ids {
		if got, _ := w.emu.ServerKeyURL(id); got != w.v2.KID && got != w.key {
			t.Errorf("%s: got %s, want %s", id, got, w.v2.KID)
		}
	}

	c, err := container.NewClientFromConnectionString(az.ConnectionString(), "locks", nil)
	if err != nil {
		t.Fatal(err)
	}
	pager := c.NewListBlobsFlatPager(nil)
	var names []string
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
			if st := b.Properties.LeaseState; st == nil || *st != lease.StateTypeAvailable {
				t.Errorf("blob %s: got lease state %v, want available (released)", *b.Name, st)
			}
		}
	}
	if len(names) != 1 || !strings.HasSuffix(names[0], "cmk") {
		t.Errorf("got lock blobs %q, want one for the key cmk", names)
	}
}
