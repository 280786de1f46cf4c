// Parameters for a deployment in UK South. Values that differ per environment come from
// environment variables so nothing personal or secret is committed:
//   ALERT_EMAIL               required: receives budget and service alerts
//   OPERATOR_PRINCIPAL_ID     optional: Entra object id allowed to upload to models/ and raw/
//   CREATE_BLOB_SUBSCRIPTION  'true' on the second pass, after the code is published
using './main.bicep'

param prefix = 'crisk'
param location = 'uksouth'
param alertEmails = [readEnvironmentVariable('ALERT_EMAIL')]
param monthlyBudget = 500
param storageSku = 'Standard_ZRS'
param modelName = 'current'

// Latency: one warm HTTP instance, so no prediction waits for a cold start.
param httpAlwaysReadyInstances = 1
param httpPerInstanceConcurrency = 4
param instanceMemoryMB = 2048
// Cost ceiling: three 2 GB instances busy all month still fit the budget (infra/README.md).
param maximumInstanceCount = 3

param samplingPercentage = 50
param logDailyQuotaGb = 2
param http5xxPercentThreshold = 5
param p95LatencyThresholdMs = 100

param createBlobEventSubscription = readEnvironmentVariable('CREATE_BLOB_SUBSCRIPTION', 'false') == 'true'
param operatorPrincipalId = readEnvironmentVariable('OPERATOR_PRINCIPAL_ID', '')
param operatorPrincipalType = 'User'
