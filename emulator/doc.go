// Package emulator is an in-process emulation of the Azure endpoints
// cmkrotator calls: the App Service managed identity endpoint, Key Vault
// keys and the Microsoft.FluidRelay resource provider of Resource Manager.
// Tests run the real Azure SDK clients against it over real HTTP(S) or,
// inside testing/synctest bubbles, over InProcessTransport.
package emulator
