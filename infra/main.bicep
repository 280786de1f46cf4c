// Credit-risk scoring service on Azure: storage, a Flex Consumption Function App (HTTP
// scoring API + blob-triggered batch pipeline), identities and roles, monitoring with
// alerts, and a monthly budget on the resource group. Every name derives from `prefix`.
//
// Deploy: az deployment group create -g <rg> --template-file infra/main.bicep \
//           --parameters infra/main.bicepparam
// then publish the code and rerun with createBlobEventSubscription=true (infra/README.md).

targetScope = 'resourceGroup'

@description('Short lowercase prefix every resource name starts with.')
@minLength(3)
@maxLength(10)
param prefix string = 'crisk'

@description('Region. UK South keeps customer data in the UK.')
param location string = resourceGroup().location

@description('Email addresses for budget and service alerts.')
@minLength(1)
param alertEmails array

@description('Monthly budget for the resource group, in the billing currency of the subscription (GBP expected).')
@minValue(1)
param monthlyBudget int = 500

@description('First day of the budget period (yyyy-MM-01). Keep the first value on later redeployments.')
param budgetStartDate string = utcNow('yyyy-MM-01')

@description('Storage replication.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param storageSku string = 'Standard_ZRS'

@description('Blob name of the model bundle the app loads from the models container.')
param modelName string = 'current'

@description('Always-ready instances for HTTP functions (0 allows cold starts on the prediction path).')
@minValue(0)
@maxValue(10)
param httpAlwaysReadyInstances int = 1

@description('Maximum Function App instances: the compute cost ceiling.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 3

@description('Concurrent HTTP requests per instance before scaling out.')
@minValue(1)
@maxValue(100)
param httpPerInstanceConcurrency int = 4

@description('Instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Ingestion sampling for Application Insights (percent of telemetry kept).')
@allowed([
  100
  50
  33
  25
  20
  10
])
param samplingPercentage int = 50

@description('Daily Log Analytics ingestion cap in GB.')
@minValue(1)
param logDailyQuotaGb int = 2

@description('Alert threshold: percent of HTTP requests ending in 5xx.')
@minValue(1)
@maxValue(100)
param http5xxPercentThreshold int = 5

@description('Alert threshold: p95 HTTP latency in milliseconds.')
@minValue(10)
param p95LatencyThresholdMs int = 100

@description('Second pass only: create the Event Grid subscription to the deployed blob trigger.')
param createBlobEventSubscription bool = false

@description('Optional object id of the operator (person or CI) allowed to upload to models/ and raw/.')
param operatorPrincipalId string = ''

@description('Principal type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

var suffix = take(uniqueString(resourceGroup().id, prefix), 6)
var tags = {
  app: 'credit-risk-scoring'
  prefix: prefix
  'managed-by': 'bicep'
}
var names = {
  storage: take('${prefix}st${suffix}', 24)
  functionIdentity: '${prefix}-id-func-${suffix}'
  eventGridIdentity: '${prefix}-id-evgrid-${suffix}'
  plan: '${prefix}-plan-${suffix}'
  functionApp: '${prefix}-func-${suffix}'
  workspace: '${prefix}-log-${suffix}'
  appInsights: '${prefix}-appi-${suffix}'
  actionGroup: '${prefix}-ag-${suffix}'
  systemTopic: '${prefix}-evgt-${suffix}'
  budget: '${prefix}-budget'
}
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'

resource functionIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.functionIdentity
  location: location
  tags: tags
}

resource eventGridIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.eventGridIdentity
  location: location
  tags: tags
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: names.storage
    location: location
    tags: tags
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    actionGroupName: names.actionGroup
    dailyQuotaGb: logDailyQuotaGb
    samplingPercentage: samplingPercentage
    alertEmails: alertEmails
    http5xxPercentThreshold: http5xxPercentThreshold
    p95LatencyThresholdMs: p95LatencyThresholdMs
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    deadLetterContainerName: deadLetterContainerName
    functionPrincipalId: functionIdentity.properties.principalId
    eventGridPrincipalId: eventGridIdentity.properties.principalId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: tags
    planName: names.plan
    appName: names.functionApp
    identityId: functionIdentity.id
    identityClientId: functionIdentity.properties.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.connectionString
    modelName: modelName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpAlwaysReadyInstances: httpAlwaysReadyInstances
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
  }
  // The host reads its package and leases with the identity: roles must exist first.
  dependsOn: [
    roles
  ]
}

module eventGrid 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  params: {
    location: location
    tags: tags
    systemTopicName: names.systemTopic
    storageAccountId: storage.outputs.id
    functionAppName: functionApp.outputs.name
    deadLetterContainerName: deadLetterContainerName
    eventGridIdentityId: eventGridIdentity.id
    createSubscription: createBlobEventSubscription
  }
  dependsOn: [
    roles
  ]
}

resource budget 'Microsoft.Consumption/budgets@2023-11-01' = {
  name: names.budget
  properties: {
    category: 'Cost'
    amount: monthlyBudget
    timeGrain: 'Monthly'
    timePeriod: {
      startDate: budgetStartDate
    }
    notifications: {
      actual80: {
        enabled: true
        operator: 'GreaterThanOrEqualTo'
        threshold: 80
        thresholdType: 'Actual'
        contactEmails: alertEmails
        contactGroups: [
          monitoring.outputs.actionGroupId
        ]
      }
      actual100: {
        enabled: true
        operator: 'GreaterThanOrEqualTo'
        threshold: 100
        thresholdType: 'Actual'
        contactEmails: alertEmails
        contactGroups: [
          monitoring.outputs.actionGroupId
        ]
      }
      forecast100: {
        enabled: true
        operator: 'GreaterThanOrEqualTo'
        threshold: 100
        thresholdType: 'Forecasted'
        contactEmails: alertEmails
        contactGroups: [
          monitoring.outputs.actionGroupId
        ]
      }
    }
  }
}

output functionAppUrl string = 'https://${functionApp.outputs.defaultHostName}'
output functionAppName string = functionApp.outputs.name
output storageAccountName string = storage.outputs.name
output eventGridSystemTopicName string = eventGrid.outputs.systemTopicName
output blobEventSubscriptionCreated bool = eventGrid.outputs.subscriptionCreated
