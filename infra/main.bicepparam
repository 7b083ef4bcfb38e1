// Example parameters. Copy, edit the subscription map, then:
//   az deployment group create -g <resource group> -f infra/main.bicep -p infra/main.bicepparam
using 'main.bicep'

param name = 'cmkrot'
param location = 'westeurope'

// A new vault and key. For an existing vault in this resource group, set
// createKeyVault = false and keyVaultName; for existing keys, createKeys = false.
param createKeyVault = true
param createKeys = true
param keyType = 'RSA'
param keySize = 3072
param keyExpiry = 'P1Y'
param rotateBeforeExpiry = 'P60D'
param notifyBeforeExpiry = 'P75D'

// The subscription map: which Fluid Relay servers use which key. Names are
// matched exactly, so "fluid-cmk" never matches "fluid-cmk-old".
param targets = [
  {
    keyName: 'fluid-cmk'
    servers: [
      // '/subscriptions/<subscription>/resourceGroups/<rg>/providers/Microsoft.FluidRelay/fluidRelayServers/relay-eu'
    ]
  }
]

// Create one Fluid Relay server with CMK on fluid-cmk and subscribe it.
param createFluidRelayServer = true
param fluidRelayStorageSku = 'standard'

// The Event Grid subscription to the KeyNewVersionCreated function. Event Grid
// refuses to subscribe a function that does not exist: keep false for the
// first deployment, publish the code, then set true here and deploy again.
// Leave it true afterwards: every later deployment then updates the subject
// filter from targets, while with false the subscription is skipped and keeps
// its old filter.
param subscribeEvents = false

param enablePullDelivery = false

param rotationConcurrency = 8
param rotationDeadline = '25s'
param dryRun = false
param reconcileSchedule = '0 */30 * * * *'
param logLevel = 'info'
