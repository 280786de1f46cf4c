// The enforced spend ceiling. A budget only notifies; this module turns overspend into a
// stop. Three metric alerts watch the Flex Consumption billing meters of the app over a
// sliding hour (on-demand GB-seconds, on-demand executions, always-ready executions); the
// budget's 100% "actual" notification joins them. All four call one action group whose
// Logic App stops the function app through Azure Resource Manager with its own managed
// identity (Website Contributor on this one app), and email the operators. A stopped app
// stays stopped until someone starts it again. The arithmetic is in infra/README.md.

param location string
param tags object

param functionAppName string
param workflowName string
param actionGroupName string

@description('Email addresses told when the guard stops the app.')
@minLength(1)
param alertEmails array

@description('Stop when on-demand execution exceeds this many GB-seconds in any hour.')
@minValue(1)
param onDemandGbSecondsPerHour int = 10000

@description('Stop when on-demand instances run more executions than this in any hour.')
@minValue(1)
param onDemandExecutionsPerHour int = 50000

@description('Stop when always-ready instances run more executions than this in any hour.')
@minValue(1)
param alwaysReadyExecutionsPerHour int = 150000

// Built-in role: Website Contributor (manage web apps, including stop/start).
var websiteContributorRoleId = 'de139f84-1756-47ae-9be6-808fbbe84772'
// The Flex billing metrics count MB-milliseconds: 1 GB-s = 1,024,000 MB-ms.
var mbMillisecondsPerGbSecond = 1024000

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource stopper 'Microsoft.Logic/workflows@2019-05-01' = {
  name: workflowName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
    definition: {
      '$schema': 'https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#'
      contentVersion: '1.0.0.0'
      triggers: {
        alert: {
          type: 'Request'
          kind: 'Http'
          inputs: {
            schema: {}
          }
        }
      }
      actions: {
        stop_function_app: {
          type: 'Http'
          runAfter: {}
          inputs: {
            method: 'POST'
            uri: '${environment().resourceManager}${substring(functionApp.id, 1)}/stop?api-version=2024-04-01'
            authentication: {
              type: 'ManagedServiceIdentity'
              audience: environment().resourceManager
            }
          }
        }
      }
      outputs: {}
    }
  }
}

resource stopperCanStopTheApp 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(functionApp.id, stopper.id, websiteContributorRoleId)
  scope: functionApp
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', websiteContributorRoleId)
    principalId: stopper.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource stopGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'costguard'
    enabled: true
    emailReceivers: [for (email, i) in alertEmails: {
      name: 'email-${i}'
      emailAddress: email
      useCommonAlertSchema: true
    }]
    logicAppReceivers: [
      {
        name: 'stop-function-app'
        resourceId: stopper.id
        callbackUrl: listCallbackUrl('${stopper.id}/triggers/alert', '2019-05-01').value
        useCommonAlertSchema: true
      }
    ]
  }
}

var guards = [
  {
    name: 'on-demand-gb-seconds'
    metric: 'OnDemandFunctionExecutionUnits'
    threshold: onDemandGbSecondsPerHour * mbMillisecondsPerGbSecond
    what: 'on-demand execution above ${onDemandGbSecondsPerHour} GB-s in an hour'
  }
  {
    name: 'on-demand-executions'
    metric: 'OnDemandFunctionExecutionCount'
    threshold: onDemandExecutionsPerHour
    what: 'more than ${onDemandExecutionsPerHour} on-demand executions in an hour'
  }
  {
    name: 'always-ready-executions'
    metric: 'AlwaysReadyFunctionExecutionCount'
    threshold: alwaysReadyExecutionsPerHour
    what: 'more than ${alwaysReadyExecutionsPerHour} always-ready executions in an hour'
  }
]

resource guardAlerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [for guard in guards: {
  name: '${functionAppName}-guard-${guard.name}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Cost guard: stops the function app on ${guard.what}.'
    severity: 1
    enabled: true
    scopes: [
      functionApp.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT1H'
    autoMitigate: false
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: guard.name
          metricNamespace: 'Microsoft.Web/sites'
          metricName: guard.metric
          operator: 'GreaterThan'
          threshold: guard.threshold
          timeAggregation: 'Total'
        }
      ]
    }
    actions: [
      {
        actionGroupId: stopGroup.id
      }
    ]
  }
}]

output actionGroupId string = stopGroup.id
output workflowName string = stopper.name
