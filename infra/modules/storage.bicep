// Storage for the data lake (raw -> curated/quarantine), the model bundles, the decision
// audit trail, the Flex Consumption deployment package and the Functions host itself
// (AzureWebJobsStorage).
// Identity-only access: shared keys are off, so every caller needs an Entra ID role.
// With privateNetwork the data plane is closed to the internet except for the operators'
// IP ranges: the app reaches it through private endpoints (modules/network.bicep) and
// trusted Azure services (Event Grid dead-lettering with its identity) through the bypass.

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object

@description('Replication. ZRS keeps the data through a zone outage for a few pence a GB more than LRS.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param skuName string = 'Standard_ZRS'

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Container that receives Event Grid events that could not be delivered.')
param deadLetterContainerName string

@description('Deny public network access except operatorIpRanges (the app uses private endpoints).')
param privateNetwork bool = true

@description('Public IPv4 addresses or CIDR ranges (up to /30) allowed to reach the data plane when privateNetwork is true: the operators who upload batches and models.')
param operatorIpRanges array = []

@description('Container of the decision audit trail: append blobs under date=YYYY-MM-DD/, written by the scoring API (DECISION_LOG_CONTAINER).')
param decisionContainerName string = 'decisions'

@description('Days every decision record stays immutable (time-based retention; counted from an append blob\'s last append). 2190 = 6 years.')
@minValue(1)
@maxValue(146000)
param decisionRetentionDays int = 2190

@description('True once the decision retention policy has been locked (infra/README.md): a locked policy can only be extended, so the template stops declaring it; redeploying an unchanged policy over a locked one would be refused.')
param decisionRetentionLocked bool = false

@description('Days after last modification before raw uploads move to the cool tier.')
@minValue(1)
param rawToCoolAfterDays int = 30

@description('Days deleted blobs and containers stay recoverable (soft delete).')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 14

@description('Days previous versions of models/ and curated/ blobs are kept.')
@minValue(1)
param protectedVersionRetentionDays int = 90

// The data containers named in the team contract, plus the two the platform needs.
var dataContainers = [
  'raw'
  'curated'
  'quarantine'
  'models'
]
var allContainers = concat(dataContainers, [
  deploymentContainerName
  deadLetterContainerName
])

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: The default action is Deny whenever privateNetwork is true (the default); checkov cannot evaluate the parameter. Only operatorIpRanges and trusted Azure services get through; the app uses private endpoints.
  // checkov:skip=CKV_AZURE_59: Public network access stays Enabled only so the operators' IP allow-list can apply (Disabled would ignore ipRules); the default action is Deny and shared keys are off.
  // checkov:skip=CKV_AZURE_206: Replication is the skuName parameter (default Standard_ZRS); checkov does not evaluate parameter defaults, and LRS stays allowed for throwaway environments.
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  kind: 'StorageV2'
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: privateNetwork ? 'Deny' : 'Allow'
      ipRules: [for ip in operatorIpRanges: {
        value: ip
        action: 'Allow'
      }]
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

// Versioning and soft delete are properties of the whole blob service, not of one
// container. The lifecycle policy below therefore keeps old versions for long only in
// models/ and curated/, and expires them quickly everywhere else to hold cost down.
resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
      allowPermanentDelete: false
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in allContainers: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

// The decision audit trail: a container of its own (outside the loop above) because it
// carries a time-based retention policy. With allowProtectedAppendWrites the API may create
// append blobs and add blocks to them; nothing can be overwritten or deleted until the
// retention period has passed since a blob's last append. The policy is deployed unlocked
// (an unlocked policy can still be shortened or removed, e.g. in a test environment); lock
// it once in production (infra/README.md, "Decision audit trail"). Locking cannot be
// declared here: it is a separate action on the policy. Create-or-update applies only to
// unlocked policies (a locked one only accepts an extension), so after locking set
// DECISION_RETENTION_LOCKED=true and the template leaves the policy alone.
resource decisionContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: decisionContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource decisionRetention 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!decisionRetentionLocked) {
  parent: decisionContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: decisionRetentionDays
    allowProtectedAppendWrites: true
  }
}

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'raw-to-cool'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                'raw/'
              ]
            }
            actions: {
              baseBlob: {
                tierToCool: {
                  daysAfterModificationGreaterThan: rawToCoolAfterDays
                }
              }
            }
          }
        }
        {
          enabled: true
          name: 'keep-protected-versions'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                'models/'
                'curated/'
              ]
            }
            actions: {
              version: {
                delete: {
                  daysAfterCreationGreaterThan: protectedVersionRetentionDays
                }
              }
            }
          }
        }
        {
          enabled: true
          name: 'expire-other-versions'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                'raw/'
                'quarantine/'
                '${deploymentContainerName}/'
                '${deadLetterContainerName}/'
                'azure-webjobs'
              ]
            }
            actions: {
              version: {
                delete: {
                  daysAfterCreationGreaterThan: 1
                }
              }
            }
          }
        }
      ]
    }
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output decisionContainerName string = decisionContainer.name
output deploymentContainerUrl string = '${account.properties.primaryEndpoints.blob}${deploymentContainerName}'
