// Package chaos holds the fault matrix of cmkrotator: a test that runs the
// real handler, rotator and Azure SDK clients against the emulator through
// random interleavings of Key Vault events, Azure faults and concurrent
// invocations, one seed after another, and checks after each seed that
// the rotation's guarantees held. It has no code of its own; run it with
//
//	go test ./internal/chaos -chaos.seeds=500
//
// or CHAOS_SEEDS=500. A failing seed is printed and can be replayed alone
// with -chaos.seed=N.
package chaos
