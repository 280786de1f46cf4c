// Private networking for the storage account that holds the lender's customer data:
// a virtual network with one subnet delegated to the Flex Consumption app (outbound VNet
// integration) and one for private endpoints; private endpoints for the blob, queue and
// table services (the app's data and the Functions host's own state), each with its
// privatelink DNS zone linked to the network so the app resolves the account privately.
// Deployed only when vnetEnabled is true (the default). Costs are in infra/README.md.

param location string
param tags object

param vnetName string
param nsgName string
param storageAccountId string

@description('Stem of the private endpoint names: <stem>-<service>.')
param privateEndpointNameStem string

@description('Address space of the virtual network.')
param addressPrefix string = '10.40.0.0/16'

@description('Subnet delegated to Microsoft.App/environments for Flex Consumption VNet integration. A /24 leaves room for the per-group instance maxima.')
param appSubnetPrefix string = '10.40.1.0/24'

@description('Subnet that holds the storage private endpoints.')
param privateEndpointSubnetPrefix string = '10.40.2.0/24'

// One private endpoint and DNS zone per storage service the app and the host use.
var storageServices = [
  'blob'
  'queue'
  'table'
]
var appSubnetName = 'app'
var privateEndpointSubnetName = 'private-endpoints'

// Default rules only (VNet-internal and load balancer in, Internet out): the subnets are
// given a security group so rules can be added later without a network change.
resource nsg 'Microsoft.Network/networkSecurityGroups@2024-07-01' = {
  name: nsgName
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-07-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for service in storageServices: {
  name: 'privatelink.${service}.${environment().suffixes.storage}'
  location: 'global'
  tags: tags
  properties: {}
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (service, i) in storageServices: {
  parent: zones[i]
  name: '${vnetName}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource endpoints 'Microsoft.Network/privateEndpoints@2024-07-01' = [for service in storageServices: {
  name: '${privateEndpointNameStem}-${service}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: '${vnet.id}/subnets/${privateEndpointSubnetName}'
    }
    privateLinkServiceConnections: [
      {
        name: service
        properties: {
          privateLinkServiceId: storageAccountId
          groupIds: [
            service
          ]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-07-01' = [for (service, i) in storageServices: {
  parent: endpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: service
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]

output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'
output vnetId string = vnet.id
