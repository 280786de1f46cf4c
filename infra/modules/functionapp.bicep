// The Function App on a Flex Consumption plan (Linux, Python 3.11). The runtime reaches
// storage and Application Insights with the user-assigned identity only: no connection
// strings or keys are stored in app settings. With a subnet id the app's outbound traffic
// goes through the virtual network (storage private endpoints); inbound stays public so
// the risk platform and Event Grid can call it (keyed functions, HTTPS only).

param location string
param tags object

param planName string
param appName string

@description('Name of the service in azure.yaml: azd finds the app to publish by this tag.')
param azdServiceName string = 'api'

@description('Resource id of the subnet delegated to Microsoft.App/environments; empty for no VNet integration.')
param vnetSubnetId string = ''

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (identity-based connections need it).')
param identityClientId string

param blobEndpoint string
param queueEndpoint string
param tableEndpoint string

@description('URL of the blob container holding the deployment package.')
param deploymentContainerUrl string

@description('Application Insights connection string: an endpoint and an id, not a credential (local auth is disabled on the component).')
param appInsightsConnectionString string

@description('Container of the decision audit trail (append blobs under a retention policy).')
param decisionLogContainer string

@description('Blob name of the model bundle inside the models container.')
param modelName string = 'current'

@description('Instance memory in MB. One batch peaks near 1 GiB, so 512 is not offered; host.json runs one batch per instance, sized for 2048 (infra/README.md).')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Maximum on-demand instances per function group (HTTP and blob scale separately; always-ready instances are extra). 40 is the lowest value every region accepts; the spend ceiling is enforced by the cost guard (infra/README.md).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Always-ready instances for the HTTP group: removes cold starts from the prediction path.')
@minValue(0)
@maxValue(10)
param httpAlwaysReadyInstances int = 1

@description('Concurrent HTTP requests per instance before the platform adds one.')
@minValue(1)
@maxValue(100)
param httpPerInstanceConcurrency int = 4

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy for Flex Consumption depends on region support; left off until confirmed for UK South (see infra/README.md).
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Client certificates are not used: callers authenticate with function keys over TLS 1.2+.
  // checkov:skip=CKV_AZURE_222: The scoring API is called by the lender's risk platform over the internet; a private endpoint plus gateway does not fit the GBP 500/month budget. HTTPS only, TLS 1.2, keyed functions.
  // checkov:skip=CKV_AZURE_212: Flex Consumption adds instances on demand; httpAlwaysReadyInstances (default 1) can be raised to 2 for warm failover at the cost shown in infra/README.md.
  // checkov:skip=CKV_AZURE_213: No platform health-check pings: they would bill execution time on every instance; availability is watched by the 5xx-rate and p95-latency alerts instead.
  name: appName
  location: location
  tags: union(tags, {
    'azd-service-name': azdServiceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    virtualNetworkSubnetId: empty(vnetSubnetId) ? null : vnetSubnetId
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: blobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: queueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: tableEndpoint
        }
        {
          // DefaultAzureCredential in the app code picks the user-assigned identity by this.
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'MODEL_CONTAINER'
          value: 'models'
        }
        {
          name: 'MODEL_NAME'
          value: modelName
        }
        {
          // Every /api/predict decision is appended here (blobflow.audit); unset = off.
          name: 'DECISION_LOG_CONTAINER'
          value: decisionLogContainer
        }
        {
          // Flex Consumption supports only the Event Grid source for blob triggers.
          name: 'BLOB_TRIGGER_SOURCE'
          value: 'EventGrid'
        }
        {
          // blobflow.partials: off | partials (each batch into curated/partials/) | all
          // (also whole-history features in curated/_all/).
          name: 'INCREMENTAL_BATCHES'
          value: 'off'
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: [
          {
            name: 'http'
            instanceCount: httpAlwaysReadyInstances
          }
        ]
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No basic-auth publishing: deployments authenticate with Entra ID.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
