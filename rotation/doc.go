// Package rotation keeps Azure Fluid Relay servers on the newest valid
// version of their customer-managed key.
//
// It owns the domain: key references ([KeyRef]), tolerant decoding of Key
// Vault events ([DecodeEvents]), the subscription map ([Targets]), the pure
// per-server decision ([Decide]) and the bounded fan-out that applies it
// ([Rotator]). It talks to Azure only through the small interfaces it
// declares, [Keys] and [Servers]; package azure implements them over the
// Azure SDK, and package emulator serves the same wire contracts locally.
//
// The rules it enforces come from Fluid Relay's CMK contract: a server is
// never moved to an older version (unless a person asks explicitly), never
// to a vault or key it did not already use, a versionless server is left to
// follow the key itself, and every write is proven by a read.
package rotation
