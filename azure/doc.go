// Package azure implements the rotation package's interfaces over the
// Azure SDK for Go: [KeyVault] reads Key Vault keys through azkeys, and
// [FluidRelay] reads and updates Fluid Relay servers through azcore's
// Resource Manager pipeline (the generated armfluidrelay client is not
// used; small typed models follow the 2022-06-01 swagger).
//
// Both map *azcore.ResponseError to the rotation package's sentinels:
// 404 to [rotation.ErrNotFound]; 408, 409, 429, 5xx, 401 and 403 (which
// may be permission propagation), transport errors and timeouts to
// [rotation.ErrRetryable]; a 429 whose Retry-After outlasts the caller's
// deadline to a [*rotation.RetryAfterError]. Everything else is final.
package azure
