#!/usr/bin/env bash
# After the code is published (azd postdeploy hook; also run by hand on the az CLI path):
# 1. upload the model bundle to models/<MODEL_NAME>/ unless the same bytes are there;
# 2. create or update the Event Grid subscription that feeds the blob trigger, with a small
#    template of its own (infra/blob-subscription.bicep) whose webhook URL carries the
#    blobs_extension system key. The host creates that key when it first runs after the
#    publish, so the key is polled for, and the subscription is retried while the host
#    restarts (Event Grid validates the endpoint when the subscription is created).
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
function_name=$(blob_function_name)
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

echo "== blobs_extension key of $AZURE_FUNCTION_APP_NAME"
key=""
for attempt in $(seq 1 30); do
  # Any request wakes the host, which then creates the key if it is missing.
  curl -sS --max-time 20 -o /dev/null "${AZURE_FUNCTION_APP_URL:?}/api/health" || true
  key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
    --query systemKeys.blobs_extension -o tsv 2>/dev/null || true)
  [ -n "$key" ] && break
  echo "  not there yet (attempt $attempt/30); waiting 10 s"
  sleep "${CRISK_RETRY_SECONDS:-10}"
done
[ -n "$key" ] || { echo "error: the host never created its blobs_extension key" >&2; exit 1; }

echo "== Event Grid subscription: $container/ -> $function_name"
for attempt in 1 2 3 4 5; do
  if az deployment group create -g "$AZURE_RESOURCE_GROUP" --name blob-subscription \
      --template-file "$CRISK_ROOT/infra/blob-subscription.bicep" \
      --parameters systemTopicName="$EVENT_GRID_SYSTEM_TOPIC_NAME" \
        functionAppName="$AZURE_FUNCTION_APP_NAME" storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
        functionName="$function_name" watchedContainer="$container" \
        deadLetterContainerName="$DEAD_LETTER_CONTAINER" eventGridIdentityId="$EVENT_GRID_IDENTITY_ID" \
        blobsExtensionKey="$key" \
      --only-show-errors --output none; then
    echo "subscription ready: uploads to $container/ now trigger $function_name"
    exit 0
  fi
  echo "  endpoint validation failed (attempt $attempt/5; the host may be restarting); retrying in 30 s"
  sleep "${CRISK_RETRY_SECONDS:-30}"
done
echo "error: could not create the Event Grid subscription" >&2
exit 1
