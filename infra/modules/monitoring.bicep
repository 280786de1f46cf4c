// Telemetry and alerting: a Log Analytics workspace with a daily cap, workspace-based
// Application Insights that only accepts Entra ID-authenticated telemetry, an action group,
// two log alerts on the HTTP API (5xx rate and p95 latency) and one on input drift (any
// PSI at or above its threshold in a blob batch).

param location string
param tags object

param workspaceName string
param appInsightsName string
param actionGroupName string

@description('Days logs are kept. 30 is within the retention included in the ingestion price.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Daily ingestion cap in GB: a hard stop on runaway logging costs.')
@minValue(1)
param dailyQuotaGb int = 2

@description('Share of telemetry kept by ingestion sampling (percent).')
@allowed([
  100
  50
  33
  25
  20
  10
])
param samplingPercentage int = 50

@description('Email addresses that receive alerts.')
@minLength(1)
param alertEmails array

@description('Alert when more than this percent of HTTP requests end in a 5xx.')
@minValue(1)
@maxValue(100)
param http5xxPercentThreshold int = 5

@description('Alert when the p95 HTTP request duration exceeds this many milliseconds.')
@minValue(10)
param p95LatencyThresholdMs int = 100

@description('How often the drift alert looks for drifted batches (batches arrive hours apart; 15 minutes or more is the cheapest log alert frequency).')
@allowed([
  'PT15M'
  'PT30M'
  'PT1H'
])
param driftEvaluationFrequency string = 'PT15M'

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-07-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    workspaceCapping: {
      dailyQuotaGb: dailyQuotaGb
    }
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
    SamplingPercentage: samplingPercentage
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take(replace(actionGroupName, '-', ''), 12)
    enabled: true
    emailReceivers: [for (email, i) in alertEmails: {
      name: 'email-${i}'
      emailAddress: email
      useCommonAlertSchema: true
    }]
  }
}

// HTTP requests only: requests with a URL. The blob-triggered batch function also logs
// requests but has no URL, and its duration is not the prediction latency.
// sum(itemCount) keeps counts right when sampling drops items.
var http5xxQuery = '''
requests
| where isnotempty(url)
| summarize total = sum(itemCount), failed = sumif(itemCount, toint(resultCode) >= 500)
| where total > 0
| extend failedPercent = 100.0 * failed / total
| project failedPercent
'''

var p95Query = '''
requests
| where isnotempty(url)
| summarize p95 = percentile(duration, 95), n = sum(itemCount)
| where n >= 20
| project p95
'''

resource http5xxAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${appInsightsName}-http-5xx-rate'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'HTTP 5xx rate above ${http5xxPercentThreshold}%'
    description: 'Share of HTTP requests answered with a 5xx over the last 15 minutes.'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: http5xxQuery
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failedPercent'
          operator: 'GreaterThan'
          threshold: http5xxPercentThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource p95Alert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${appInsightsName}-http-p95-latency'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'HTTP p95 latency above ${p95LatencyThresholdMs} ms'
    description: 'p95 of HTTP request duration over the last 15 minutes (at least 20 requests).'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: p95Query
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'p95'
          operator: 'GreaterThan'
          threshold: p95LatencyThresholdMs
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Drift: the blob batch logs one line per PSI, "drift_psi {json}" (blobflow/metrics.py),
// because the Functions Python worker forwards only a log's message to Application
// Insights, not its extra fields. The line holds names and numbers only (feature, psi,
// threshold, drifted, rows, model_version, batch); the threshold is the one the batch used.
// host.json keeps traces out of adaptive sampling, so no batch's lines are dropped.
var driftQuery = '''
traces
| where message startswith "drift_psi {"
| extend record = parse_json(substring(message, strlen("drift_psi ")))
| extend psi = todouble(record.psi), threshold = todouble(record.threshold)
| where psi >= threshold
| project timestamp, batch = tostring(record.batch), feature = tostring(record.feature), psi, threshold, model_version = tostring(record.model_version)
'''

resource driftAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${appInsightsName}-drift-psi'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Input drift: a PSI at or above its threshold'
    description: 'A blob batch logged a model input (or the model score) whose Population Stability Index against the training reference is at or above the threshold. Read curated/<batch>/drift.json (the query result names the batch and the inputs).'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: driftEvaluationFrequency
    // Overlapping windows: a line ingested a few minutes late is still seen, and the alert
    // (stateful, autoMitigate) fires once per drifted batch, not once per evaluation.
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: driftQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
output connectionString string = appInsights.properties.ConnectionString
output actionGroupId string = actionGroup.id
output workspaceId string = workspace.id
