// The Event Grid subscription that tells the function app about deleted inputs:
// BlobDeleted events under the watched container go to the Event Grid trigger named by
// DELETED_FUNCTION in function_app.py, which withdraws the batch's outputs (or republishes
// it without labels). Deployed after the code is published (infra/scripts/postdeploy.sh),
// like infra/blob-subscription.bicep, because its webhook URL carries the eventgrid_extension
// system key, which the host creates once it has loaded an Event Grid trigger, and Event
// Grid validates the endpoint when the subscription is created. The key arrives as a secure
// parameter: it is not stored in the deployment history and never becomes an output.
//
// This is the Event Grid trigger's endpoint (/runtime/webhooks/eventgrid, plain function
// name), not the blob extension's (/runtime/webhooks/blobs, Host.Functions.<name>), and its
// key is eventgrid_extension, not blobs_extension.

targetScope = 'resourceGroup'

param systemTopicName string
param functionAppName string
param storageAccountName string

@description('Name of the Event Grid-triggered function, read from function_app.py (DELETED_FUNCTION) by the hook.')
param functionName string

@description('Container whose deletions are delivered (the container the blob trigger watches).')
param watchedContainer string

param deadLetterContainerName string

@description('Resource id of the user-assigned identity Event Grid uses to write dead letters.')
param eventGridIdentityId string

@secure()
@description('The eventgrid_extension system key of the function app (az functionapp keys list).')
param eventGridExtensionKey string

// Event subscription names allow only A-Z a-z 0-9 and hyphens, 3-64 characters.
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

resource deletedSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/eventgrid?functionName=${functionName}&code=${eventGridExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobDeleted'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${watchedContainer}/blobs/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    // Undeliverable events are kept; the daily reconcile function catches their batches.
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

output subscriptionName string = deletedSubscription.name
