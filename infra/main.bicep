// cmkrotator: the whole deployment in one resource group.
//
// What it creates (see docs/deploy.md and docs/operations.md):
//   - the Function App (Flex Consumption, Linux, custom handler), its host
//     storage, Application Insights and a Log Analytics workspace;
//   - two user-assigned identities on the app: "host" for the Functions host's
//     own storage and telemetry, and "rotator" (AZURE_CLIENT_ID) for the
//     product, which may only read and write the subscribed Fluid Relay
//     servers, read the metadata of the mapped keys and lease the rotation
//     locks;
//   - the Key Vault (RBAC, soft delete, purge protection) and RSA keys with a
//     rotation policy, or references to existing ones in this resource group;
//   - a user-assigned identity for Fluid Relay's CMK with "Key Vault Crypto
//     Service Encryption User" on the keys, and optionally a Fluid Relay
//     server created with CMK;
//   - the Event Grid system topic on the vault and the subscription that
//     delivers KeyNewVersionCreated for exactly the mapped key names to the
//     KeyNewVersionCreated function, with retries and a dead-letter container;
//   - optionally an Event Grid namespace topic and queue subscription for
//     pull delivery.
//
// The Key Vault, the CMK identity and the Fluid Relay server share one region
// (location) and the deployment's tenant. The event subscription needs the
// function code to be published first: deploy with subscribeEvents = false,
// publish, then set subscribeEvents = true in the parameter file and keep it
// there, so that every later deployment updates the subject filter.

targetScope = 'resourceGroup'

metadata description = 'cmkrotator: keeps Azure Fluid Relay servers on the newest version of their customer-managed key.'

// ---------------------------------------------------------------------------
// Parameters

@description('Short name used in resource names (lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param name string = 'cmkrot'

@description('Region of the Key Vault, the Fluid Relay CMK identity and any Fluid Relay server created here. Fluid Relay requires all three in one region; for an existing vault, use its region.')
param location string = resourceGroup().location

@description('Region of the Function App, its storage and monitoring. Flex Consumption is not offered everywhere (az functionapp list-flexconsumption-locations).')
param appLocation string = location

@description('Create the Key Vault. When false, keyVaultName names an existing vault in this resource group that uses Azure RBAC authorization.')
param createKeyVault bool = true

@description('Key Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param keyVaultName string = 'kv${take(name, 8)}${take(uniqueString(resourceGroup().id, name), 13)}'

@description('Key Vault SKU. premium allows RSA-HSM keys.')
@allowed([
  'standard'
  'premium'
])
param keyVaultSku string = 'standard'

@description('Create the keys named in targets, with a rotation policy. Set to false once they exist, or for keys that already exist.')
param createKeys bool = true

@description('Key type of created keys. Fluid Relay accepts RSA and RSA-HSM only.')
@allowed([
  'RSA'
  'RSA-HSM'
])
param keyType string = 'RSA'

@description('Key size of created keys.')
@allowed([
  2048
  3072
  4096
])
param keySize int = 3072

@description('Lifetime of each key version (ISO 8601 duration); new versions get this expiry.')
param keyExpiry string = 'P1Y'

@description('Rotate this long before a version expires (ISO 8601 duration).')
param rotateBeforeExpiry string = 'P60D'

@description('Send KeyNearExpiry this long before a version expires (ISO 8601 duration). Longer than rotateBeforeExpiry, so a failed rotation is noticed in time.')
param notifyBeforeExpiry string = 'P75D'

@description('Deployment time; sets the expiry of the first version of created keys.')
param now string = utcNow()

@description('The subscription map: for each key in the vault, the existing Fluid Relay servers (resource IDs) that use it. Key names are matched exactly (cmk does not match cmk-old). At most 25 keys (Event Grid filter limit).')
@minLength(1)
@maxLength(25)
param targets targetType[]

@description('Resource group holding the subscribed Fluid Relay servers; the rotator\'s custom role is assignable and assigned there only.')
param fluidRelayResourceGroup string = resourceGroup().name

@description('Create a Fluid Relay server with CMK, encrypted with the first key in targets, and subscribe it.')
param createFluidRelayServer bool = false

@description('Name of the Fluid Relay server to create.')
param fluidRelayServerName string = 'fr-${name}-${take(uniqueString(resourceGroup().id, name), 6)}'

@description('Storage SKU of the created Fluid Relay server.')
@allowed([
  'basic'
  'standard'
])
param fluidRelayStorageSku string = 'standard'

@description('Name of the Event Grid system topic on the vault. A vault has at most one system topic: if it already has one, give its name here.')
param systemTopicName string = 'evgt-${keyVaultName}'

@description('Create or update the Event Grid subscription to the KeyNewVersionCreated function. Event Grid checks that the function exists, so publish the code before setting this to true; then keep it true, or later deployments leave the subscription\'s subject filter as it was.')
param subscribeEvents bool = false

@description('Also forward key events to an Event Grid namespace topic with a queue subscription, for pull delivery.')
param enablePullDelivery bool = false

@description('Optional principal (object) ID given "EventGrid Data Receiver" on the pull topic, e.g. an operator group.')
param pullReceiverPrincipalId string = ''

@description('Servers handled at once per invocation (ROTATION_CONCURRENCY).')
@minValue(1)
@maxValue(64)
param rotationConcurrency int = 8

@description('Time budget of one invocation (ROTATION_DEADLINE, Go duration). Fits Event Grid\'s 30 s wait.')
param rotationDeadline string = '25s'

@description('Decide and report only, write nothing (ROTATION_DRY_RUN).')
param dryRun bool = false

@description('NCRONTAB schedule of the Reconcile function (ROTATION_RECONCILE_SCHEDULE).')
param reconcileSchedule string = '0 */30 * * * *'

@description('slog level (LOG_LEVEL).')
@allowed([
  'debug'
  'info'
  'warn'
  'error'
])
param logLevel string = 'info'

@description('Maximum Flex Consumption instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption instance memory.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Log Analytics retention in days.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 90

@description('Tags on every resource.')
param tags object = {}

@description('One entry of the subscription map.')
type targetType = {
  @description('Key name in the vault; matched exactly.')
  keyName: string

  @description('Resource IDs of existing Fluid Relay servers encrypted with this key.')
  servers: string[]
}

// ---------------------------------------------------------------------------
// Names and derived values

var token = toLower(uniqueString(resourceGroup().id, name))
var functionAppName = 'func-${name}-${token}'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'deadletter'
var lockContainerName = 'cmkrotator-locks'
var eventSubscriptionName = 'cmkrotator-key-new-version'
var keyNewVersionCreated = 'Microsoft.KeyVault.KeyNewVersionCreated'

var keyNames = [for t in targets: t.keyName]

// Resource Manager of this cloud, without the trailing slash, as the code's
// default (https://management.azure.com) is written.
var resourceManager = environment().resourceManager
var armEndpoint = endsWith(resourceManager, '/') ? substring(resourceManager, 0, length(resourceManager) - 1) : resourceManager
var vaultHost = '${keyVaultName}${environment().suffixes.keyvaultDns}'

var createdServerId = resourceId(
  subscription().subscriptionId,
  fluidRelayResourceGroup,
  'Microsoft.FluidRelay/fluidRelayServers',
  fluidRelayServerName
)
var createdServerIds = createFluidRelayServer ? [createdServerId] : []

// ROTATION_TARGETS: versionless key URLs; the first key also gets the server
// created here, if any.
var rotationTargets = {
  targets: [
    for (t, i) in targets: {
      key: 'https://${vaultHost}/keys/${t.keyName}'
      servers: i == 0 ? concat(t.servers, createdServerIds) : t.servers
    }
  ]
}

// The event filter shared by push and pull delivery: the event type and an
// exact, case-insensitive match on the subject, which for Key Vault events is
// the key name. subjectBeginsWith would let "cmk" match "cmk-old".
var keyEventFilter = {
  includedEventTypes: [
    keyNewVersionCreated
  ]
  advancedFilters: [
    {
      operatorType: 'StringIn'
      key: 'Subject'
      values: keyNames
    }
  ]
}

// Event Grid's documented maximum: 30 attempts within 24 hours.
var keyEventRetry = {
  maxDeliveryAttempts: 30
  eventTimeToLiveInMinutes: 1440
}

// Built-in roles (Azure built-in roles reference).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultCryptoServiceEncryptionUser: 'e147488a-f6f5-4113-8e2d-b22465e65bf6'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  eventGridDataReceiver: '78cbd9e7-9798-4e2e-9b5a-547d9ebb31fb'
}

// A custom role's name must be unique in the tenant: its name and its ID both
// include the subscription and the resource group, so that resource groups of
// the same name in two subscriptions of one tenant get roles of their own.
var keyReaderRoleName = guid(subscription().id, resourceGroup().id, 'cmkrotator-key-metadata-reader')

// ---------------------------------------------------------------------------
// Identities

// The product's identity (AZURE_CLIENT_ID). Its only grants: the Fluid Relay
// custom role, key metadata read on the mapped keys, the lock container.
resource rotatorIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: 'id-${name}-rotator'
  location: appLocation
  tags: tags
}

// The Functions host's identity: host storage, deployment package, telemetry.
resource hostIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: 'id-${name}-host'
  location: appLocation
  tags: tags
}

// Fluid Relay's identity for the customer-managed key (same region as vault).
resource cmkIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: 'id-${name}-fluidcmk'
  location: location
  tags: tags
}

// Event Grid's identity for dead-lettering and for forwarding to pull delivery.
resource eventGridIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: 'id-${name}-eventgrid'
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------
// Key Vault and keys

resource vaultNew 'Microsoft.KeyVault/vaults@2026-05-15' = if (createKeyVault) {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: keyVaultSku
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2026-05-15' existing = {
  name: keyVaultName
}

resource keysNew 'Microsoft.KeyVault/vaults/keys@2026-05-15' = [
  for t in targets: if (createKeys) {
    parent: vault
    name: t.keyName
    tags: tags
    properties: {
      kty: keyType
      keySize: keySize
      keyOps: [
        'wrapKey'
        'unwrapKey'
      ]
      attributes: {
        enabled: true
        exp: dateTimeToEpoch(dateTimeAdd(now, keyExpiry))
      }
      rotationPolicy: {
        attributes: {
          expiryTime: keyExpiry
        }
        lifetimeActions: [
          {
            trigger: {
              timeBeforeExpiry: rotateBeforeExpiry
            }
            action: {
              type: 'rotate'
            }
          }
          {
            trigger: {
              timeBeforeExpiry: notifyBeforeExpiry
            }
            action: {
              type: 'notify'
            }
          }
        ]
      }
    }
    dependsOn: [
      vaultNew
    ]
  }
]

resource keys 'Microsoft.KeyVault/vaults/keys@2026-05-15' existing = [
  for t in targets: {
    parent: vault
    name: t.keyName
  }
]

// Exactly the data action azkeys GetKey and the version listing need. No
// built-in role is this narrow: Key Vault Reader adds control-plane actions
// and the metadata of secrets and certificates, Key Vault Crypto Service
// Encryption User adds wrap and unwrap (docs/deploy.md, "Permissions").
resource keyReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: keyReaderRoleName
  properties: {
    roleName: 'cmkrotator key metadata reader (${subscription().subscriptionId}, ${resourceGroup().name})'
    description: 'Read the properties and public part of Key Vault keys. No cryptographic operation, no secret, no certificate.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.KeyVault/vaults/keys/read'
        ]
        notDataActions: []
      }
    ]
  }
}

resource rotatorKeyRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (t, i) in targets: {
    name: guid(vault.id, t.keyName, rotatorIdentity.id, keyReaderRoleName)
    scope: keys[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyReaderRoleName)
      principalId: rotatorIdentity.properties.principalId
      principalType: 'ServicePrincipal'
      description: 'cmkrotator: read versions of a mapped key'
    }
    dependsOn: [
      keyReaderRole
      keysNew
    ]
  }
]

resource cmkKeyAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (t, i) in targets: {
    name: guid(vault.id, t.keyName, cmkIdentity.id, roles.keyVaultCryptoServiceEncryptionUser)
    scope: keys[i]
    properties: {
      roleDefinitionId: subscriptionResourceId(
        'Microsoft.Authorization/roleDefinitions',
        roles.keyVaultCryptoServiceEncryptionUser
      )
      principalId: cmkIdentity.properties.principalId
      principalType: 'ServicePrincipal'
      description: 'Fluid Relay CMK: get, wrap and unwrap with this key'
    }
    dependsOn: [
      keysNew
    ]
  }
]

// ---------------------------------------------------------------------------
// Storage: host storage (Functions host and deployment package) and a
// separate account for dead letters and rotation locks, so that the rotator's
// blob access is the lock container and nothing else.

resource hostStorage 'Microsoft.Storage/storageAccounts@2026-09-01' = {
  name: 'st${token}'
  location: appLocation
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2026-09-01' = {
  parent: hostStorage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' = {
  parent: hostBlobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterStorage 'Microsoft.Storage/storageAccounts@2026-09-01' = {
  name: 'stdl${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
  }
}

resource deadLetterBlobs 'Microsoft.Storage/storageAccounts/blobServices@2026-09-01' = {
  parent: deadLetterStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 30
    }
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' = {
  parent: deadLetterBlobs
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// One blob per key, leased while an instance of the app rotates that key, so
// that instances never rotate one key at once (ROTATION_LOCK_CONTAINER).
resource lockContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' = {
  parent: deadLetterBlobs
  name: lockContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource hostStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, hostIdentity.id, roles.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: hostIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Functions host: AzureWebJobsStorage and the deployment package'
  }
}

// The rotator has no access to the dead-letter container: nothing running as
// it reads dead letters (POST /api/replay takes the events in its body), and
// whoever runs cmkrotator replay --dead-letter does so with their own
// credential (docs/operations.md, "Replay dead-lettered events").

resource rotatorLockAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(lockContainer.id, rotatorIdentity.id, roles.storageBlobDataContributor)
  scope: lockContainer
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.storageBlobDataContributor
    )
    principalId: rotatorIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'cmkrotator: lease the lock blob of a key while rotating it'
  }
}

resource eventGridDeadLetterAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, eventGridIdentity.id, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.storageBlobDataContributor
    )
    principalId: eventGridIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid: write dead-lettered key events'
  }
}

// ---------------------------------------------------------------------------
// Monitoring

resource workspace 'Microsoft.OperationalInsights/workspaces@2026-03-01' = {
  name: 'log-${name}-${token}'
  location: appLocation
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}-${token}'
  location: appLocation
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

resource hostTelemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, hostIdentity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.monitoringMetricsPublisher
    )
    principalId: hostIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Functions host: send telemetry with Entra ID (local auth is off)'
  }
}

// ---------------------------------------------------------------------------
// Function App

// Every setting the binary reads, except FUNCTIONS_CUSTOMHANDLER_PORT, which
// the host sets. FUNCTIONS_WORKER_RUNTIME is functionAppConfig.runtime on
// Flex Consumption and must not be an app setting there.
var appSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: hostStorage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: hostIdentity.properties.clientId
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${hostIdentity.properties.clientId};Authorization=AAD'
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: rotatorIdentity.properties.clientId
  }
  {
    name: 'ROTATION_TARGETS'
    value: string(rotationTargets)
  }
  {
    name: 'ROTATION_ARM_ENDPOINT'
    value: armEndpoint
  }
  {
    name: 'ROTATION_ARM_AUDIENCE'
    value: environment().authentication.audiences[0]
  }
  {
    name: 'ROTATION_CONCURRENCY'
    value: string(rotationConcurrency)
  }
  {
    name: 'ROTATION_DEADLINE'
    value: rotationDeadline
  }
  {
    name: 'ROTATION_DRY_RUN'
    value: string(dryRun)
  }
  {
    name: 'ROTATION_RECONCILE_SCHEDULE'
    value: reconcileSchedule
  }
  {
    name: 'ROTATION_LOCK_CONTAINER'
    value: '${deadLetterStorage.properties.primaryEndpoints.blob}${lockContainerName}'
  }
  {
    name: 'LOG_LEVEL'
    value: logLevel
  }
  {
    name: 'LOG_FORMAT'
    value: 'json'
  }
]

resource plan 'Microsoft.Web/serverfarms@2025-03-01' = {
  name: 'plan-${name}-${token}'
  location: appLocation
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2025-03-01' = {
  name: functionAppName
  location: appLocation
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${hostIdentity.id}': {}
      '${rotatorIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: hostIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
  dependsOn: [
    deploymentContainer
    hostStorageAccess
    hostTelemetryAccess
  ]
}

// ---------------------------------------------------------------------------
// Fluid Relay: the rotator's custom role in the servers' resource group, and
// optionally a server created with CMK on the first key's current version.

module fluidRelay 'modules/fluidrelay.bicep' = {
  name: 'cmkrotator-fluidrelay-${token}'
  scope: resourceGroup(fluidRelayResourceGroup)
  params: {
    rotatorPrincipalId: rotatorIdentity.properties.principalId
    createServer: createFluidRelayServer
    serverName: fluidRelayServerName
    location: location
    cmkIdentityId: cmkIdentity.id
    keyEncryptionKeyUrl: createFluidRelayServer ? keys[0].properties.keyUriWithVersion : ''
    storageSku: fluidRelayStorageSku
  }
  dependsOn: [
    cmkKeyAccess
    keysNew
  ]
}

// ---------------------------------------------------------------------------
// Event Grid: system topic on the vault, push delivery to the function

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${eventGridIdentity.id}': {}
    }
  }
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
  dependsOn: [
    vaultNew
  ]
}

resource keyEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (subscribeEvents) {
  parent: systemTopic
  name: eventSubscriptionName
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${site.id}/functions/KeyNewVersionCreated'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: keyEventFilter
    retryPolicy: keyEventRetry
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: eventGridIdentity.id
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    eventGridDeadLetterAccess
  ]
}

// ---------------------------------------------------------------------------
// Optional pull delivery: the same events, kept in an Event Grid namespace
// topic with a queue subscription, for recovery when push delivery is down.

resource pullNamespace 'Microsoft.EventGrid/namespaces@2025-02-15' = if (enablePullDelivery) {
  name: 'evgns-${name}-${token}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    capacity: 1
  }
  properties: {
    publicNetworkAccess: 'Enabled'
  }
}

resource pullTopic 'Microsoft.EventGrid/namespaces/topics@2025-02-15' = if (enablePullDelivery) {
  parent: pullNamespace
  name: 'key-events'
  properties: {
    publisherType: 'Custom'
    inputSchema: 'CloudEventSchemaV1_0'
    eventRetentionInDays: 7
  }
}

resource pullSubscription 'Microsoft.EventGrid/namespaces/topics/eventSubscriptions@2025-02-15' = if (enablePullDelivery) {
  parent: pullTopic
  name: 'cmkrotator'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    deliveryConfiguration: {
      deliveryMode: 'Queue'
      queue: {
        receiveLockDurationInSeconds: 300
        maxDeliveryCount: 10
        eventTimeToLive: 'P7D'
      }
    }
    filtersConfiguration: {
      includedEventTypes: [
        keyNewVersionCreated
      ]
    }
  }
}

resource pullSendAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enablePullDelivery) {
  name: guid(resourceGroup().id, 'pull-topic', eventGridIdentity.id, roles.eventGridDataSender)
  scope: pullTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: eventGridIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid: forward key events to the pull topic'
  }
}

resource pullReceiveAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enablePullDelivery && !empty(pullReceiverPrincipalId)) {
  name: guid(resourceGroup().id, 'pull-topic', pullReceiverPrincipalId, roles.eventGridDataReceiver)
  scope: pullTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataReceiver)
    principalId: pullReceiverPrincipalId
    description: 'Operators: receive and acknowledge key events from the pull topic'
  }
}

resource pullForward 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (enablePullDelivery) {
  parent: systemTopic
  name: 'cmkrotator-pull'
  properties: {
    deliveryWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: eventGridIdentity.id
      }
      destination: {
        endpointType: 'NamespaceTopic'
        properties: {
          resourceId: pullTopic.id
        }
      }
    }
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: keyEventFilter
    retryPolicy: keyEventRetry
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: eventGridIdentity.id
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    pullSendAccess
    eventGridDeadLetterAccess
  ]
}

// ---------------------------------------------------------------------------
// Outputs

@description('Function App name, for publishing and for function keys.')
output functionAppName string = site.name

@description('Base URL of the HTTP functions (Rotate, Replay, Status).')
output functionBaseUrl string = 'https://${site.properties.defaultHostName}/api'

@description('Client ID of the rotator identity (AZURE_CLIENT_ID).')
output rotatorClientId string = rotatorIdentity.properties.clientId

@description('Principal ID of the rotator identity, for auditing its role assignments.')
output rotatorPrincipalId string = rotatorIdentity.properties.principalId

@description('Resource ID of the identity Fluid Relay servers use for the key.')
output fluidRelayCmkIdentityId string = cmkIdentity.id

@description('Versionless URLs of the mapped keys.')
output keyUrls string[] = [for t in targets: 'https://${vaultHost}/keys/${t.keyName}']

@description('The subscription map as set in ROTATION_TARGETS.')
output rotationTargets object = rotationTargets

@description('ROTATION_TARGETS as a JSON string, e.g. for a local run or ROTATION_TARGETS_FILE.')
output rotationTargetsJson string = string(rotationTargets)

@description('Resource ID of the Fluid Relay server created here, if any.')
output fluidRelayServerId string = createFluidRelayServer ? createdServerId : ''

@description('Event Grid system topic on the vault.')
output systemTopicName string = systemTopic.name

@description('Event subscription delivering to KeyNewVersionCreated (empty until subscribeEvents is true).')
output eventSubscriptionName string = subscribeEvents ? eventSubscriptionName : ''

@description('Dead-letter container URL (blobs land under <SUBSCRIPTION NAME IN CAPITALS>/<y>/<m>/<d>/<h>/).')
output deadLetterContainerUrl string = '${deadLetterStorage.properties.primaryEndpoints.blob}${deadLetterContainerName}'

@description('Rotation lock container URL (ROTATION_LOCK_CONTAINER): one blob per key, leased during its rotation.')
output lockContainerUrl string = '${deadLetterStorage.properties.primaryEndpoints.blob}${lockContainerName}'

@description('Pull delivery: namespace topic endpoint host name (empty when disabled).')
output pullHostName string = enablePullDelivery ? pullNamespace.properties.topicsConfiguration.hostname : ''
