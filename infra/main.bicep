// Credit-risk scoring service on Azure: storage (private by default), a Flex Consumption
// Function App (HTTP scoring API + blob-triggered batch pipeline) with VNet integration,
// identities and roles, monitoring with alerts, a monthly budget and a cost guard that stops
// the app when spend runs past the ceiling. Every name derives from `prefix`.
//
// Deploy: `azd up` (azure.yaml), or az deployment group create -g <rg> --template-file
// infra/main.bicep --parameters infra/main.bicepparam, then publish the code and run
// infra/scripts/postdeploy.sh (infra/README.md). The Event Grid subscription to the blob
// trigger is not in this template: it needs the published code (infra/blob-subscription.bicep).

targetScope = 'resourceGroup'

@description('Short lowercase prefix every resource name starts with: 3-10 lowercase letters and digits, starting with a letter. Names use it lower-cased and without "-", "_" or ".", so every name stays valid.')
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

@description('First day of the budget period (yyyy-MM-01). Set once (the azd hook stores it in the environment) and never changed: a budget start date cannot be updated.')
@minLength(10)
@maxLength(10)
param budgetStartDate string

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

@description('Maximum on-demand instances per function group (HTTP and blob each); always-ready instances are extra. 40 is accepted in every region; the spend ceiling comes from the cost guard.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Concurrent HTTP requests per instance before scaling out.')
@minValue(1)
@maxValue(100)
param httpPerInstanceConcurrency int = 4

@description('Instance memory in MB (one batch peaks near 1 GiB; host.json runs one batch per instance).')
@allowed([
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

@description('Cost guard: stop the app when on-demand execution exceeds this many GB-seconds in any hour.')
@minValue(1)
param costGuardOnDemandGbSecondsPerHour int = 10000

@description('Cost guard: stop the app past this many on-demand executions in any hour.')
@minValue(1)
param costGuardOnDemandExecutionsPerHour int = 50000

@description('Cost guard: stop the app past this many always-ready executions in any hour.')
@minValue(1)
param costGuardAlwaysReadyExecutionsPerHour int = 150000

@description('Private networking: VNet integration for the app, private endpoints for blob/queue/table, storage closed to the internet except operatorIpRanges.')
param vnetEnabled bool = true

@description('Comma-separated public IPv4 addresses or CIDR ranges (up to /30) of the operators who upload batches and models; used when vnetEnabled.')
param operatorIpRanges string = ''


@description('Optional object id of the operator (person or CI) allowed to upload to models/ and raw/ and to read curated/ and quarantine/.')
param operatorPrincipalId string = ''

@description('Principal type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Days every decision record in the audit container stays immutable (2190 = 6 years).')
@minValue(1)
@maxValue(146000)
param decisionRetentionDays int = 2190

@description('Set to true after locking the decision retention policy (infra/README.md): a locked policy only accepts extensions, so the template stops declaring it.')
param decisionRetentionLocked bool = false

@description('Optional object id of the auditor (person or group) allowed to read the decision audit trail.')
param auditorPrincipalId string = ''

@description('Principal type of auditorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param auditorPrincipalType string = 'Group'

// Lower case and without "-", "_" or ".", so the storage account name (lowercase letters
// and digits only) is valid for any prefix that passes the length checks.
var cleanPrefix = toLower(replace(replace(replace(prefix, '-', ''), '_', ''), '.', ''))
var suffix = take(uniqueString(resourceGroup().id, prefix), 6)
var operatorIps = empty(operatorIpRanges) ? [] : split(replace(operatorIpRanges, ' ', ''), ',')
var tags = {
  app: 'credit-risk-scoring'
  prefix: prefix
  'managed-by': 'bicep'
}
var names = {
  storage: take('${cleanPrefix}st${suffix}', 24)
  functionIdentity: '${cleanPrefix}-id-func-${suffix}'
  eventGridIdentity: '${cleanPrefix}-id-evgrid-${suffix}'
  plan: '${cleanPrefix}-plan-${suffix}'
  functionApp: '${cleanPrefix}-func-${suffix}'
  workspace: '${cleanPrefix}-log-${suffix}'
  appInsights: '${cleanPrefix}-appi-${suffix}'
  actionGroup: '${cleanPrefix}-ag-${suffix}'
  stopActionGroup: '${cleanPrefix}-ag-stop-${suffix}'
  stopWorkflow: '${cleanPrefix}-logic-stop-${suffix}'
  systemTopic: '${cleanPrefix}-evgt-${suffix}'
  vnet: '${cleanPrefix}-vnet-${suffix}'
  nsg: '${cleanPrefix}-nsg-${suffix}'
  privateEndpoint: '${cleanPrefix}-pe-${suffix}'
  budget: '${cleanPrefix}-budget'
}
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'
var decisionContainerName = 'decisions'

resource functionIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: names.functionIdentity
  location: location
  tags: tags
}

resource eventGridIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
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
    privateNetwork: vnetEnabled
    operatorIpRanges: operatorIps
    decisionContainerName: decisionContainerName
    decisionRetentionDays: decisionRetentionDays
    decisionRetentionLocked: decisionRetentionLocked
  }
}

module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  params: {
    location: location
    tags: tags
    vnetName: names.vnet
    nsgName: names.nsg
    storageAccountId: storage.outputs.id
    privateEndpointNameStem: names.privateEndpoint
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
    decisionContainerName: storage.outputs.decisionContainerName
    auditorPrincipalId: auditorPrincipalId
    auditorPrincipalType: auditorPrincipalType
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
    decisionLogContainer: storage.outputs.decisionContainerName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpAlwaysReadyInstances: httpAlwaysReadyInstances
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    vnetSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
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
    eventGridIdentityId: eventGridIdentity.id
  }
}

module costGuard 'modules/costguard.bicep' = {
  name: 'costguard'
  params: {
    location: location
    tags: tags
    functionAppName: functionApp.outputs.name
    workflowName: names.stopWorkflow
    actionGroupName: names.stopActionGroup
    alertEmails: alertEmails
    onDemandGbSecondsPerHour: costGuardOnDemandGbSecondsPerHour
    onDemandExecutionsPerHour: costGuardOnDemandExecutionsPerHour
    alwaysReadyExecutionsPerHour: costGuardAlwaysReadyExecutionsPerHour
  }
}

// Notifications at 80% (actual) and 100% (forecast) email the operators; 100% actual also
// goes to the cost guard's action group, which stops the app. Cost data reaches budgets with
// a delay of hours, so the metric alerts in modules/costguard.bicep are the fast stop.
resource budget 'Microsoft.Consumption/budgets@2021-10-01' = {
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
          costGuard.outputs.actionGroupId
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

// Upper-case outputs become azd environment values, which the hooks in infra/scripts read.
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output EVENT_GRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.systemTopicName
output EVENT_GRID_IDENTITY_ID string = eventGridIdentity.id
output DEAD_LETTER_CONTAINER string = deadLetterContainerName
output DECISION_LOG_CONTAINER string = decisionContainerName
output MODEL_NAME string = modelName
output VNET_ENABLED bool = vnetEnabled
