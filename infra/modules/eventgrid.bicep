// Flex Consumption runs blob triggers only from Event Grid: this system topic on the storage
// account publishes its BlobCreated events. The subscription that delivers the raw/ ones to
// the function's blob-extension webhook is a separate step after the code is published
// (infra/blob-subscription.bicep, run by infra/scripts/postdeploy.sh), because its URL
// carries the blobs_extension system key, which exists only once the host has run.

param location string
param tags object

param systemTopicName string
param storageAccountId string

@description('Resource id of the user-assigned identity Event Grid uses to write dead letters.')
param eventGridIdentityId string

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

output systemTopicName string = systemTopic.name
