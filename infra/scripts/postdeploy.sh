#!/usr/bin/env bash
# After the code is published (azd postdeploy hook; also run by hand on the az CLI path):
# 1. upload the model bundle to models/<MODEL_NAME>/ (every file, model.json last);
# 2. create or update the Event Grid subscription that feeds the blob trigger
#    (infra/blob-subscription.bicep: BlobCreated under raw/ -> the blob extension's webhook,
#    /runtime/webhooks/blobs, keyed with the blobs_extension system key);
# 3. create or update the one that reports deleted inputs
#    (infra/blob-deleted-subscription.bicep: BlobDeleted under raw/ -> the Event Grid
#    trigger's webhook, /runtime/webhooks/eventgrid, keyed with the eventgrid_extension key).
# The host creates each system key when it first runs the functions that need it after the
# publish, so the keys are polled for, and each subscription is retried while the host
# restarts (Event Grid validates the endpoint when a subscription is created).
# Reads: AZURE_RESOURCE_GROUP, AZURE_FUNCTION_APP_NAME, AZURE_FUNCTION_APP_URL, AZURE_STORAGE_ACCOUNT_NAME,
# EVENT_GRID_SYSTEM_TOPIC_NAME, EVENT_GRID_IDENTITY_ID, DEAD_LETTER_CONTAINER, MODEL_NAME
# (azd sets them from the main.bicep outputs); MODEL_BUNDLE_DIR (default artifacts/trained);
# CRISK_RETRY_SECONDS (pause between retries; tests set it to 0).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

: "${AZURE_RESOURCE_GROUP:?}" "${AZURE_FUNCTION_APP_NAME:?}" "${AZURE_STORAGE_ACCOUNT_NAME:?}"
: "${EVENT_GRID_SYSTEM_TOPIC_NAME:?}" "${EVENT_GRID_IDENTITY_ID:?}" "${DEAD_LETTER_CONTAINER:?}"
model_name="${MODEL_NAME:-current}"
bundle="${MODEL_BUNDLE_DIR:-$CRISK_ROOT/artifacts/trained}"
blob_function=$(blob_function_name)
deleted_function=$(deleted_function_name)
container=$(blob_container_name)

echo "== model bundle: $bundle -> models/$model_name/"
for file in model.joblib model.json; do
  [ -f "$bundle/$file" ] || { echo "error: $bundle/$file not found" >&2; exit 1; }
done
# Every file of the bundle (model.joblib, linear.json, reference.json, ...), model.json last:
# a service that loads while the upload runs then sees the old manifest (whose checksums
# refuse the new files) or the complete new bundle, never a new manifest without its files.
bundle_files=()
for path in "$bundle"/*; do
  [ -f "$path" ] && [ "$(basename "$path")" != model.json ] && bundle_files+=("$path")
done
bundle_files+=("$bundle/model.json")
upload_bundle() {
  local path
  for path in "${bundle_files[@]}"; do
    az storage blob upload --auth-mode login --account-name "$AZURE_STORAGE_ACCOUNT_NAME" \
      --container-name models --name "$model_name/$(basename "$path")" --file "$path" \
      --overwrite true --only-show-errors --output none || return 1
  done
}
# Role assignments and network rules made by the provisioning can take minutes to apply.
uploaded=""
for attempt in 1 2 3 4 5 6; do
  if upload_bundle; then
    uploaded=yes
    break
  fi
  echo "  upload refused (attempt $attempt/6; new roles and IP rules take a few minutes); retrying in 30 s"
  sleep "${CRISK_RETRY_SECONDS:-30}"
done
[ -n "$uploaded" ] || { echo "error: could not upload the model bundle (see infra/README.md, private networking)" >&2; exit 1; }

system_key() {
  # system_key NAME: the function app's system key NAME, polled for until the host has made it.
  local name="$1" key="" attempt
  for attempt in $(seq 1 30); do
    # Any request wakes the host, which then creates the key if it is missing.
    curl -sS --max-time 20 -o /dev/null "${AZURE_FUNCTION_APP_URL:?}/api/health" || true
    key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
      --query "systemKeys.$name" -o tsv 2>/dev/null || true)
    [ -n "$key" ] && { printf '%s\n' "$key"; return 0; }
    echo "  $name key not there yet (attempt $attempt/30); waiting 10 s" >&2
    sleep "${CRISK_RETRY_SECONDS:-10}"
  done
  echo "error: the host never created its $name key" >&2
  return 1
}

subscribe() {
  # subscribe DEPLOYMENT TEMPLATE KEY_PARAMETER KEY FUNCTION: deploy one subscription template.
  local deployment="$1" template="$2" key_parameter="$3" key="$4" function="$5" attempt
  for attempt in 1 2 3 4 5; do
    if az deployment group create -g "$AZURE_RESOURCE_GROUP" --name "$deployment" \
        --template-file "$CRISK_ROOT/infra/$template" \
        --parameters systemTopicName="$EVENT_GRID_SYSTEM_TOPIC_NAME" \
          functionAppName="$AZURE_FUNCTION_APP_NAME" storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
          functionName="$function" watchedContainer="$container" \
          deadLetterContainerName="$DEAD_LETTER_CONTAINER" eventGridIdentityId="$EVENT_GRID_IDENTITY_ID" \
          "$key_parameter=$key" \
        --only-show-errors --output none; then
      return 0
    fi
    echo "  endpoint validation failed (attempt $attempt/5; the host may be restarting); retrying in 30 s" >&2
    sleep "${CRISK_RETRY_SECONDS:-30}"
  done
  echo "error: could not create the Event Grid subscription $deployment" >&2
  return 1
}

echo "== Event Grid subscription: uploads to $container/ -> $blob_function"
blobs_key=$(system_key blobs_extension)
subscribe blob-subscription blob-subscription.bicep blobsExtensionKey "$blobs_key" "$blob_function"
echo "subscription ready: uploads to $container/ now trigger $blob_function"

echo "== Event Grid subscription: deletions in $container/ -> $deleted_function"
eventgrid_key=$(system_key eventgrid_extension)
subscribe blob-deleted-subscription blob-deleted-subscription.bicep eventGridExtensionKey \
  "$eventgrid_key" "$deleted_function"
echo "subscription ready: deletions in $container/ now reach $deleted_function"
