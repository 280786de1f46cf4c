// The Event Grid subscription that feeds the blob trigger: BlobCreated events under the
// watched container go to the Functions blob-extension webhook of the blob function.
// Deployed on its own, after the code is published (infra/scripts/postdeploy.sh, the azd
// postdeploy hook), because the webhook URL carries the blobs_extension system key, which
// the host creates once code with a blob trigger has run, and Event Grid validates the
// endpoint when the subscription is created. The key arrives as a secure parameter: it is
// not stored in the deployment history and never becomes an output.

targetScope = 'resourceGroup'

param systemTopicName string
param functionAppName string
param storageAccountName string

@description('Name of the blob-triggered function, read from function_app.py by the hook.')
param functionName string

@description('Container the trigger watches (the first segment of the trigger path in function_app.py).')
param watchedContainer string

param deadLetterContainerName string

@description('Resource id of the user-assigned identity Event Grid uses to write dead letters.')
param eventGridIdentityId string

@secure()
@description('The blobs_extension system key of the function app (az functionapp keys list).')
param blobsExtensionKey string

// Event subscription names allow only A-Z a-z 0-9 and hyphens, 3-64 characters; Python
// function names use underscores.
var subscriptionName = take('${replace(functionName, '_', '-')}-${watchedContainer}', 64)

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource blobSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${watchedContainer}/blobs/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    // Events that exhaust their retries are kept, not dropped.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: eventGridIdentityId
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storageAccount.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output subscriptionName string = blobSubscription.name
