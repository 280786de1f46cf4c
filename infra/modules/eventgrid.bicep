// Flex Consumption runs blob triggers only from Event Grid: a system topic on the storage
// account publishes BlobCreated events, and a subscription delivers those under raw/ to the
// Functions blob-extension webhook of `process_batch_blob`.
//
// The webhook URL carries the `blobs_extension` system key, which the Functions host
// creates only once code with a blob trigger is running, and Event Grid validates the
// endpoint when the subscription is created. So the subscription is deployed in a second
// pass (createSubscription = true) after the code is published; see infra/README.md.

param location string
param tags object

param systemTopicName string
param storageAccountId string
param functionAppName string

@description('Name of the blob-triggered function (Python v2: the decorated function name).')
param functionName string = 'process_batch_blob'

@description('Container the trigger watches.')
param watchedContainer string = 'raw'

param deadLetterContainerName string

@description('Resource id of the user-assigned identity Event Grid uses to write dead letters.')
param eventGridIdentityId string

@description('Create the webhook subscription. Needs the function code deployed first.')
param createSubscription bool = false

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${eventGridIdentityId}': {}
    }
  }
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource functionHost 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: functionApp
  name: 'default'
}

resource blobSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (createSubscription) {
  parent: systemTopic
  name: '${functionName}-${watchedContainer}'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${functionHost.listKeys().systemKeys.blobs_extension}'
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
          resourceId: storageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output systemTopicName string = systemTopic.name
output subscriptionCreated bool = createSubscription
