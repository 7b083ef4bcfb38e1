package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/internal/fakehost"
)

// TestAppConfigMatchesTheRepository: the app local plays is the one the
// repository deploys, host.json and every function.json.
func TestAppConfigMatchesTheRepository(t *testing.T) {
	want, err := fakehost.LoadApp("..")
	if err != nil {
		t.Fatal(err)
	}
	got, err := localApp()
	if err != nil {
		t.Fatal(err)
	}
	got.Root = want.Root
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("local's app (-repository +local):\n%s", diff)
	}
}
