// Fluid Relay side of a cmkrotator deployment, deployed into the resource
// group that holds the subscribed Fluid Relay servers:
//   - a custom role with exactly fluidRelayServers/read and /write,
//     assignable in this resource group only, and its assignment to the
//     rotator's identity;
//   - optionally, a Fluid Relay server created with a customer-managed key,
//     as the CMK documentation's PUT payload describes.

targetScope = 'resourceGroup'

@description('Principal (object) ID of the rotator identity that PATCHes the servers.')
param rotatorPrincipalId string

@description('Create a Fluid Relay server with a customer-managed key.')
param createServer bool = false

@description('Name of the Fluid Relay server to create (when createServer is true).')
param serverName string = ''

@description('Region of the server; must be the Key Vault\'s and the CMK identity\'s region.')
param location string

@description('Resource ID of the user-assigned identity Fluid Relay uses to reach the key.')
param cmkIdentityId string

@description('Versioned key URL the new server starts on.')
param keyEncryptionKeyUrl string = ''

@description('Storage SKU of the new server. CMK is chosen at creation and can never be turned off.')
@allowed([
  'basic'
  'standard'
])
param storageSku string = 'standard'

// A custom role's name must be unique in the tenant: its name and its ID both
// include the subscription and the resource group (see main.bicep).
var rotatorRoleName = guid(subscription().id, resourceGroup().id, 'cmkrotator-fluid-relay-key-rotator')

resource rotatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: rotatorRoleName
  properties: {
    roleName: 'cmkrotator Fluid Relay key rotator (${subscription().subscriptionId}, ${resourceGroup().name})'
    description: 'Read Fluid Relay servers and update their customer-managed key version. Nothing else.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.FluidRelay/fluidRelayServers/read'
          'Microsoft.FluidRelay/fluidRelayServers/write'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

resource rotatorAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, rotatorPrincipalId, rotatorRoleName)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rotatorRoleName)
    principalId: rotatorPrincipalId
    principalType: 'ServicePrincipal'
    description: 'cmkrotator: update the key version of Fluid Relay servers in this resource group'
  }
  dependsOn: [
    rotatorRole
  ]
}

resource server 'Microsoft.FluidRelay/fluidRelayServers@2022-06-01' = if (createServer) {
  name: serverName
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${cmkIdentityId}': {}
    }
  }
  properties: {
    storagesku: storageSku
    encryption: {
      customerManagedKeyEncryption: {
        keyEncryptionKeyIdentity: {
          identityType: 'UserAssigned'
          userAssignedIdentityResourceId: cmkIdentityId
        }
        keyEncryptionKeyUrl: keyEncryptionKeyUrl
      }
    }
  }
}

output roleDefinitionId string = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rotatorRoleName)
output serverId string = createServer ? server.id : ''
