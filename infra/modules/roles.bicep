// Role assignments, each at the narrowest scope that works:
// - the function identity gets the data-plane roles the Functions host documents for an
//   identity-based AzureWebJobsStorage (blob owner for leases/receipts/deployment package,
//   queue contributor for blob-trigger bookkeeping, table contributor for host diagnostic
//   events), scoped to this one storage account, plus Monitoring Metrics Publisher on this
//   one Application Insights component so telemetry can be sent with Entra ID auth;
// - the function identity also gets Blob Data Contributor on the decision audit container,
//   stating what the API needs there even if its account-wide role is narrowed later (the
//   container's retention policy, not the role, is what stops records being changed);
// - an optional auditor principal may read the decision audit container, nothing else;
// - the Event Grid identity may only write into the dead-letter container;
// - an optional operator principal may write model bundles and raw batches, and read the
//   curated outputs and the quarantine (python -m blobflow.upload --wait reads curated/).

param storageAccountName string
param appInsightsName string
param deadLetterContainerName string

@description('Container of the decision audit trail.')
param decisionContainerName string

@description('Principal (object) id of the function app identity.')
param functionPrincipalId string

@description('Principal id of the identity Event Grid uses for dead-lettering.')
param eventGridPrincipalId string

@description('Optional Entra ID object id of the operator (person or CI) who uploads models and batches. Empty: no assignment.')
param operatorPrincipalId string = ''

@description('Principal type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Optional Entra ID object id of the auditor (person or group) who may read the decision audit trail. Empty: no assignment.')
param auditorPrincipalId string = ''

@description('Principal type of auditorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param auditorPrincipalType string = 'Group'

// Built-in role definition ids (the same in every tenant).
var roleIds = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

var functionStorageRoles = [
  roleIds.storageBlobDataOwner
  roleIds.storageQueueDataContributor
  roleIds.storageTableDataContributor
]

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource modelsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'models'
}

resource rawContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'raw'
}

resource curatedContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'curated'
}

resource quarantineContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: 'quarantine'
}

resource decisionContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: decisionContainerName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource functionStorageAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in functionStorageRoles: {
  name: guid(storageAccount.id, functionPrincipalId, roleId)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource functionMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionPrincipalId, roleIds.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionDecisionWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(decisionContainer.id, functionPrincipalId, roleIds.storageBlobDataContributor)
  scope: decisionContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource auditorDecisionReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(auditorPrincipalId)) {
  name: guid(decisionContainer.id, auditorPrincipalId, roleIds.storageBlobDataReader)
  scope: decisionContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataReader)
    principalId: auditorPrincipalId
    principalType: auditorPrincipalType
  }
}

resource eventGridDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, eventGridPrincipalId, roleIds.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorModelsWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(modelsContainer.id, operatorPrincipalId, roleIds.storageBlobDataContributor)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorRawWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(rawContainer.id, operatorPrincipalId, roleIds.storageBlobDataContributor)
  scope: rawContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorCuratedReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(curatedContainer.id, operatorPrincipalId, roleIds.storageBlobDataReader)
  scope: curatedContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataReader)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorQuarantineReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(quarantineContainer.id, operatorPrincipalId, roleIds.storageBlobDataReader)
  scope: quarantineContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataReader)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}
