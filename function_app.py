"""Azure Functions entry point (Python v2 model): HTTP scoring, the blob-triggered batch, and
the two ways a deleted input reaches its batch.

Thin on purpose: decorators and wiring only. The HTTP side is ``scoring.api``'s FastAPI app
behind ``AsgiFunctionApp`` (every route under ``/api/``, keyed with ``AuthLevel.FUNCTION``
in Azure; ``func start`` does not check keys). The batch side is
``blobflow.commit.handle_blob_event``, imported on the first blob event so an HTTP cold
start never loads the pipeline (pandas, pyarrow). Dependencies point one way: this file ->
``blobflow`` (the Azure glue) -> ``features`` and ``scoring``.

Deleted inputs (issue 16 item 4): ``DELETED_FUNCTION`` is an Event Grid trigger that a
second subscription feeds with ``Microsoft.Storage.BlobDeleted`` events under ``raw/``
(``blobflow.commit.handle_deleted_event``: outputs withdrawn, or republished without
labels); ``RECONCILE_FUNCTION`` runs daily on a timer (``reconcile_batches``) and catches
what events missed: an Event Grid trigger that fails is not redelivered, and undeliverable
events go to the dead-letter container.

Settings (read at import, as the trigger's source must be known when functions are indexed):
``AzureWebJobsStorage`` (connection), ``BLOB_TRIGGER_SOURCE`` (``LogsAndContainerScan``
locally, ``EventGrid`` on Flex Consumption), ``MODEL_CONTAINER``/``MODEL_NAME`` or
``MODEL_DIR`` (which model bundle to serve), ``DECISION_LOG_CONTAINER`` or
``DECISION_LOG_DIR`` (where every HTTP decision is recorded before it is released; unset:
not recorded).

The blob trigger binds an SDK-type ``BlobClient`` (``azurefunctions-extensions-bindings-blob``):
the host hands the worker a reference to the blob, never its content, and the batch is then
streamed range by range by ``blobflow``. ``BLOB_FUNCTION``, ``BLOB_TRIGGER_PATH`` and
``DELETED_FUNCTION`` are plain literals on purpose: ``infra/scripts`` reads them from this
file to subscribe Event Grid to the functions, so there is no second copy to drift.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_types

from blobflow.audit import decision_log_from_settings
from blobflow.bundle_source import source_from_settings
from blobflow.store import STORAGE_SETTING, BlobStore, connect
from scoring import api
from scoring.holder import ModelHolder

if TYPE_CHECKING:
    from blobflow.predict import Predictor
API_ROOT = "/api"
HTTP_FUNCTION = "http_app_func"
BLOB_FUNCTION = "process_batch_blob"  # infra/scripts/lib.sh reads this line
BLOB_TRIGGER_PATH = "raw/{name}"  # container/pattern; infra/scripts/lib.sh reads this line
DELETED_FUNCTION = "batch_input_deleted"  # infra/scripts/lib.sh reads this line
RECONCILE_FUNCTION = "reconcile_batches_daily"
RECONCILE_SCHEDULE = "0 17 3 * * *"  # NCRONTAB (second minute hour day month weekday): 03:17 UTC

log = logging.getLogger("function_app")


def blob_trigger_source(value: str | None) -> func.BlobSource:
    """``BLOB_TRIGGER_SOURCE`` as a trigger source; an unknown value fails indexing loudly."""
    text = (value or "").strip() or func.BlobSource.LOGS_AND_CONTAINER_SCAN.value
    for source in func.BlobSource:
        if text.lower() in (source.value.lower(), source.name.lower()):
            return source
    allowed = ", ".join(s.value for s in func.BlobSource)
    raise ValueError(f"BLOB_TRIGGER_SOURCE={text!r} is not one of: {allowed}")


@functools.cache
def batch_store() -> BlobStore:
    """One storage client per instance, created on first use (not at import)."""
    return BlobStore(connect(STORAGE_SETTING))


# One holder per instance, loaded lazily on first use (a bad bundle means 503s, not a crash
# loop): from blob storage when MODEL_CONTAINER is set, else from MODEL_DIR. The HTTP API
# and the batch predictions read it from the same place, ``http_app.state.holder``.
# Decisions of the HTTP API go to the audit trail (an immutable blob container in Azure)
# before they are released; the storage client is built on the first decision.
http_app = api.create_app(
    holder=ModelHolder(source_from_settings),
    root_path=API_ROOT,
    decision_log=decision_log_from_settings(),
)


def current_holder() -> ModelHolder:
    """The model holder the HTTP API serves from (batch predictions use the same one)."""
    return http_app.state.holder


@functools.cache
def batch_predictor() -> Predictor:
    from blobflow.predict import holder_predictor

    return holder_predictor(current_holder)


app = func.AsgiFunctionApp(
    app=http_app,
    http_auth_level=func.AuthLevel.FUNCTION,
    function_name=HTTP_FUNCTION,
)


@app.function_name(BLOB_FUNCTION)
@app.blob_trigger(
    arg_name="client",
    path=BLOB_TRIGGER_PATH,
    connection=STORAGE_SETTING,
    source=blob_trigger_source(os.environ.get("BLOB_TRIGGER_SOURCE")),
)
def process_batch_blob(client: blob_types.BlobClient) -> None:
    """Process the batch the uploaded blob belongs to.

    ``client`` is an ``azure.storage.blob.BlobClient`` for the uploaded blob: only its name is
    used, and the batch is streamed from storage by ``blobflow``, so memory stays bounded by
    the pipeline's chunk size rather than the file size.
    """
    from blobflow.commit import handle_blob_event  # the pipeline loads on the first batch

    path = f"{client.container_name}/{client.blob_name}"
    handle_blob_event(batch_store(), path, batch_predictor())


@app.function_name(DELETED_FUNCTION)
@app.event_grid_trigger(arg_name="event")
def batch_input_deleted(event: func.EventGridEvent) -> None:
    """A blob under the batch container was deleted: withdraw the batch's outputs, or
    republish it without labels. Only the event's type and subject are read."""
    from blobflow.commit import handle_deleted_event

    handle_deleted_event(batch_store(), event.event_type, event.subject, batch_predictor())


@app.function_name(RECONCILE_FUNCTION)
@app.timer_trigger(arg_name="timer", schedule=RECONCILE_SCHEDULE, run_on_startup=False)
def reconcile_batches_daily(timer: func.TimerRequest) -> None:
    """Once a day, bring every batch whose outputs no longer match its inputs up to date."""
    from blobflow.commit import reconcile_batches

    results = reconcile_batches(batch_store(), batch_predictor())
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[str(result.outcome)] = outcomes.get(str(result.outcome), 0) + 1
    log.info(
        "reconcile: %d batch(es) brought up to date %s%s",
        len(results),
        dict(sorted(outcomes.items())),
        " (the timer was past due)" if timer.past_due else "",
    )
