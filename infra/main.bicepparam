// Parameters for a deployment in UK South, used by `azd up` and by az deployment group
// create alike. Values that differ per environment come from environment variables (azd
// passes its environment values), so nothing personal or secret is committed:
//   ALERT_EMAIL          required: receives budget, cost-guard and service alerts
//   BUDGET_START_DATE    required: yyyy-MM-01, set once and kept (infra/scripts/preprovision.sh)
//   OPERATOR_PRINCIPAL_ID optional: Entra object id allowed to upload to models/ and raw/
//   OPERATOR_IP_RANGES   optional: comma-separated public IPs/CIDRs allowed to reach storage
//   VNET_ENABLED         optional: 'false' turns private networking off (default on)
//   DECISION_RETENTION_LOCKED optional: 'true' once the audit retention policy is locked
using './main.bicep'

param prefix = 'crisk'
param location = 'uksouth'
param alertEmails = [readEnvironmentVariable('ALERT_EMAIL')]
param monthlyBudget = 500
param budgetStartDate = readEnvironmentVariable('BUDGET_START_DATE')
param storageSku = 'Standard_ZRS'
param modelName = 'current'

// Latency: one warm HTTP instance, so no prediction waits for a cold start.
param httpAlwaysReadyInstances = 1
param httpPerInstanceConcurrency = 4
param instanceMemoryMB = 2048
// Per function group, on demand; valid in every region. The ceiling is the cost guard.
param maximumInstanceCount = 40

param samplingPercentage = 50
param logDailyQuotaGb = 2
param http5xxPercentThreshold = 5
param p95LatencyThresholdMs = 100

// The enforced ceiling (arithmetic in infra/README.md).
param costGuardOnDemandGbSecondsPerHour = 10000
param costGuardOnDemandExecutionsPerHour = 50000
param costGuardAlwaysReadyExecutionsPerHour = 150000

param vnetEnabled = readEnvironmentVariable('VNET_ENABLED', 'true') != 'false'
param operatorIpRanges = readEnvironmentVariable('OPERATOR_IP_RANGES', '')
param operatorPrincipalId = readEnvironmentVariable('OPERATOR_PRINCIPAL_ID', '')
param operatorPrincipalType = 'User'
param decisionRetentionLocked = readEnvironmentVariable('DECISION_RETENTION_LOCKED', 'false') == 'true'
