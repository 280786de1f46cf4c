"""The commit protocol of a blob-triggered batch: ``raw/<batch>/`` in, curated and
quarantine blobs out, ``_SUCCESS`` last.

Readiness rule (a trigger fires once per uploaded blob, in any order, possibly twice):

- ``raw/<batch>/transactions.csv`` absent: nothing to do yet (labels may arrive first).
- present: process the batch with whatever is there *now*, labels optional. When labels
  arrive later their trigger processes the batch again, and the labelled outputs replace
  the unlabelled ones. The outputs depend only on the input blobs, never on arrival order.

Commit protocol, so a half-written batch never carries ``_SUCCESS``:

1. Take the batch lock (a lease on ``curated/_locks/<batch>``), so runs never interleave.
   Every write and delete below first confirms the lease is still held
   (``blobflow.store.Lease``): a run that lost it raises ``LeaseLostError`` and writes
   nothing more, so it cannot remove or overwrite what a newer run published.
2. If ``_SUCCESS`` (or ``error.json``) already records the same input etags, stop: a
   runtime retry or a duplicate event needs no work.
3. Delete ``_SUCCESS`` and ``error.json``, write the outputs (``blobflow.runner``), delete
   outputs an earlier run left that this one does not produce (the training set and
   labels quarantine of a labelled run), write ``_SUCCESS`` last. Bad data writes
   ``error.json`` last instead and does not raise (so the runtime does not retry it);
   storage errors and a lost lease raise (so it does).

   Any other failure while reading the data (a bug the data triggered) also writes
   ``error.json``: retrying the same bytes would fail the same way, forever.

What ``_SUCCESS`` means (the contract for consumers, also in ``blobflow/README.md``): the
outputs it lists (with their sha256) were produced from the inputs it lists (with their
etags). Outputs never outlive their input: when ``transactions.csv`` is deleted, the next
run for the batch (``handle_deleted_event`` for a BlobDeleted event, ``reconcile_batches``
on the daily timer, or any event for the batch) removes the outputs and ``_SUCCESS`` and
leaves ``_WITHDRAWN`` saying why; when ``labels.csv`` is deleted the batch is reprocessed
without labels. Between the deletion and that run, ``verify_batch`` tells a consumer the
outputs no longer match their inputs.

With ``INCREMENTAL_BATCHES`` set (``blobflow.partials``), a processed batch is also added to
the store ``curated/partials/`` (and ``curated/_all/`` rebuilt) under the store's own lease,
after its outputs and before its ``_SUCCESS``, which then says what was done
(``partials``); a withdrawn batch leaves the store.

A model with a drift reference also gives ``drift.json``; its PSI lines are logged once
``_SUCCESS`` is written (``blobflow.metrics``), so a retried run does not report twice.

Batch names must match ``BATCH_NAME`` (segments of letters, digits, ``.``, ``_`` and ``-``,
not starting with ``.``, ``_`` or ``-``, not ending with ``.``); anything else is ignored and
logged only in escaped form, so a blob name cannot forge a log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO

from blobflow.metrics import log_drift
from blobflow.naming import (
    BATCH_NAME,
    CURATED,
    DRIFT,
    ERROR,
    JSON_TYPE,
    LABELS,
    MAX_BATCH_NAME,
    PREDICTIONS,
    RAW,
    SUCCESS,
    TRANSACTIONS,
    WITHDRAWN,
    blob_path,
    blob_path_from_subject,
    parse_blob_path,
    safe_name,
)
from blobflow.partials import LOCK_KEY as PARTIALS_LOCK
from blobflow.partials import OFF, update_store
from blobflow.partials import mode_from_settings as partials_mode
from blobflow.predict import Predictor
from blobflow.runner import BatchRun, run_batch
from blobflow.sink import RUN_OUTPUTS
from blobflow.store import BatchBusyError, BatchStore, BlobInfo, Lease, StoreView
from features.schema import InputError

log = logging.getLogger("blobflow.commit")


class Outcome(StrEnum):
    PROCESSED = "processed"
    ERROR = "error"  # bad input: error.json written, not retried
    WAITING = "waiting"  # no transactions yet
    SKIPPED = "skipped"  # these exact inputs were already processed
    IGNORED = "ignored"  # not a batch input file
    WITHDRAWN = "withdrawn"  # the transactions were deleted: outputs removed


@dataclass
class BatchResult:
    batch: str | None
    outcome: Outcome
    outputs: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None
    error: str | None = None
    predictions: str | None = None  # why predictions.csv is absent, when it should be there
    drift: str | None = None  # why drift.json is absent (no model, no reference...)


class LeasedStore(StoreView):
    """The batch's store as the protocol uses it while it holds the lock: every write and
    delete first confirms the lease, so a run that lost it stops before it mutates."""

    def __init__(self, inner: BatchStore, lease: Lease) -> None:
        super().__init__(inner)
        self._lease = lease

    def write(self, container: str, name: str, data: bytes | BinaryIO, content_type: str) -> None:
        self._lease.confirm()
        self.inner.write(container, name, data, content_type)

    def delete(self, container: str, name: str) -> None:
        self._lease.confirm()
        self.inner.delete(container, name)

    def lock(self, key: str) -> AbstractContextManager[Lease]:
        raise RuntimeError("the batch lock is already held")


def handle_blob_event(
    store: BatchStore, blob_path_: str, predict: Predictor | None = None
) -> BatchResult:
    """What the blob trigger does for one uploaded blob."""
    parsed = parse_blob_path(blob_path_)
    if parsed is None:
        log.warning(
            "blob event ignored: %s is not <batch>/%s or <batch>/%s with a valid batch name",
            safe_name(blob_path_),
            TRANSACTIONS,
            LABELS,
        )
        return BatchResult(batch=None, outcome=Outcome.IGNORED)
    batch, file = parsed
    log.info("blob event batch=%s file=%s", batch, file)
    return process_batch(store, batch, predict=predict)


def process_batch(
    store: BatchStore, batch: str, *, predict: Predictor | None = None, force: bool = False
) -> BatchResult:
    """Bring ``curated/<batch>/`` up to date with ``raw/<batch>/``. See the module doc."""
    with store.lock(batch) as lease:
        return _process_locked(LeasedStore(store, lease), batch, predict, force, root=store)


def _inputs_record(transactions: BlobInfo, labels: BlobInfo | None) -> dict[str, Any]:
    """The inputs as ``_SUCCESS`` and ``error.json`` record them."""
    return {"transactions": transactions.record(), "labels": labels.record() if labels else None}


def _current_inputs(store: BatchStore, batch: str) -> dict[str, Any] | None:
    """The batch's inputs as they are now; None when its transactions are absent."""
    transactions = store.stat(RAW, f"{batch}/{TRANSACTIONS}")
    if transactions is None:
        return None
    return _inputs_record(transactions, store.stat(RAW, f"{batch}/{LABELS}"))


def _process_locked(
    store: BatchStore,
    batch: str,
    predict: Predictor | None,
    force: bool,
    *,
    root: BatchStore,
) -> BatchResult:
    started = time.monotonic()
    transactions = store.stat(RAW, f"{batch}/{TRANSACTIONS}")
    if transactions is None:
        if _withdraw(store, batch):
            _update_partials(root, batch, None)
            return BatchResult(batch=batch, outcome=Outcome.WITHDRAWN)
        log.info("batch=%s outcome=waiting (no %s yet)", batch, TRANSACTIONS)
        return BatchResult(batch=batch, outcome=Outcome.WAITING)
    labels = store.stat(RAW, f"{batch}/{LABELS}")
    inputs = _inputs_record(transactions, labels)
    if not force and _already_done(store, batch, inputs):
        log.info("batch=%s outcome=skipped (these inputs were already processed)", batch)
        return BatchResult(batch=batch, outcome=Outcome.SKIPPED)

    store.delete(CURATED, f"{batch}/{SUCCESS}")
    store.delete(CURATED, f"{batch}/{ERROR}")
    if store.stat(CURATED, f"{batch}/{WITHDRAWN}") is not None:  # only after a withdrawal
        store.delete(CURATED, f"{batch}/{WITHDRAWN}")
    try:
        run = run_batch(store, batch, transactions, labels, predict)
    except InputError as exc:
        return _publish_error(store, batch, inputs, str(exc), started)
    except Exception as exc:
        if _is_transient(exc):
            raise
        # The data made the job fail in a way we did not foresee. The same bytes would fail
        # the same way on every retry, so this is recorded like bad input. The message may
        # quote the data: only the exception's type and place are kept.
        where = _innermost(exc)
        log.error("batch=%s outcome=error unexpected %s at %s", batch, type(exc).__name__, where)
        reason = (
            f"internal error while processing the input ({type(exc).__name__} at {where}); "
            "the input was not used. Please report this batch"
        )
        return _publish_error(store, batch, inputs, reason, started)
    partials = _update_partials(root, batch, transactions)
    return _publish(store, batch, inputs, run, started, partials)


def _update_partials(root: BatchStore, batch: str, transactions: BlobInfo | None) -> str | None:
    """Bring ``curated/partials/`` (and ``curated/_all/``) in line with the batch, under
    the store's own lease (``blobflow.partials``; off unless ``INCREMENTAL_BATCHES`` is
    set). Storage errors raise (the event is retried); any other failure leaves the
    batch's own outputs standing and is noted in its ``_SUCCESS``."""
    try:
        mode = partials_mode()
    except ValueError as exc:  # a misconfigured store must not stop the batches
        log.error("batch=%s partials not updated: %s", batch, exc)
        return f"not updated: {exc}"
    if mode == OFF:
        return None
    with root.lock(PARTIALS_LOCK) as lease:
        try:
            return update_store(LeasedStore(root, lease), batch, transactions, mode)
        except Exception as exc:
            if _is_transient(exc):
                raise
            where = _innermost(exc)
            log.error("batch=%s partials not updated: %s at %s", batch, type(exc).__name__, where)
            return f"not updated: internal error ({type(exc).__name__} at {where})"


def _is_transient(exc: BaseException) -> bool:
    """Storage, network and lock errors: worth retrying (the runtime retries the event)."""
    if isinstance(exc, OSError | MemoryError | BatchBusyError | TimeoutError):
        return True
    try:
        from azure.core.exceptions import AzureError
    except ImportError:  # pragma: no cover - the SDK is a runtime dependency
        return False
    return isinstance(exc, AzureError)


def _innermost(exc: BaseException) -> str:
    """``file:line`` where the exception was raised (no message: it may hold data)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    return f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def _withdraw(store: BatchStore, batch: str) -> bool:
    """Remove the outputs of a batch whose transactions are gone; True if there were any.

    ``_WITHDRAWN`` records what was withdrawn and why, for consumers who saw the batch.
    """
    markers = {m: store.read_small(CURATED, f"{batch}/{m}") for m in (SUCCESS, ERROR)}
    if not any(v is not None for v in markers.values()):
        return False
    previous: dict[str, Any] = {}
    for raw in markers.values():
        if raw is not None:
            with contextlib.suppress(ValueError, AttributeError):
                previous = json.loads(raw).get("inputs") or {}
    store.delete(CURATED, f"{batch}/{SUCCESS}")
    store.delete(CURATED, f"{batch}/{ERROR}")
    _remove_stale(store, batch, keep=set())
    body = {
        "batch": batch,
        "status": "withdrawn",
        "reason": f"raw/{batch}/{TRANSACTIONS} was deleted; the outputs made from it are removed",
        "inputs": previous,
    }
    store.write(CURATED, f"{batch}/{WITHDRAWN}", _json_bytes(body), JSON_TYPE)
    log.info("batch=%s outcome=withdrawn (its %s was deleted)", batch, TRANSACTIONS)
    return True


def verify_batch(store: BatchStore, batch: str) -> bool:
    """True only if ``_SUCCESS`` exists and every input it records still exists unchanged
    (same etag), and no input it did not use has appeared: the check a consumer makes
    before trusting ``curated/<batch>/``."""
    raw = store.read_small(CURATED, f"{batch}/{SUCCESS}")
    if raw is None:
        return False
    try:
        recorded = json.loads(raw).get("inputs") or {}
    except (ValueError, AttributeError):
        return False
    for key, name in (("transactions", TRANSACTIONS), ("labels", LABELS)):
        now = store.stat(RAW, f"{batch}/{name}")
        then = recorded.get(key)
        if (now is None) != (then is None):
            return False
        if now is not None and then is not None and now.etag != then.get("etag"):
            return False
    return True


def handle_blob_deleted(
    store: BatchStore, blob_path_: str, predict: Predictor | None = None
) -> BatchResult:
    """What a BlobDeleted event for ``raw/<batch>/...`` does: bring the batch's outputs in
    line with the inputs that are left (withdrawn, or reprocessed without labels)."""
    return handle_blob_event(store, blob_path_, predict)


BLOB_DELETED_EVENT = "Microsoft.Storage.BlobDeleted"


def handle_deleted_event(
    store: BatchStore, event_type: str, subject: str, predict: Predictor | None = None
) -> BatchResult:
    """An Event Grid event from the storage account: a BlobDeleted under ``raw/`` goes to
    ``handle_blob_deleted``; anything else (another type or container, a subject that does
    not name a blob) is ignored and logged escaped."""
    path = blob_path_from_subject(subject)
    if event_type != BLOB_DELETED_EVENT or path is None or not path.startswith(f"{RAW}/"):
        log.warning(
            "deletion event ignored: type %s, subject %s",
            safe_name(event_type, 60),
            safe_name(subject),
        )
        return BatchResult(batch=None, outcome=Outcome.IGNORED)
    return handle_blob_deleted(store, path, predict)


def reconcile_batches(
    store: BatchStore, predict: Predictor | None = None, prefix: str = ""
) -> list[BatchResult]:
    """Bring every batch whose outputs no longer match its inputs up to date: the safety net
    for events that never arrived (a timer runs it daily).

    Looks at batches with a marker (``_SUCCESS`` or ``error.json``) and batches with
    uploaded transactions, whose names start with ``prefix``; a batch whose marker records
    exactly its current inputs is left alone (no lock, no run). Others are processed:
    withdrawn if their transactions are gone, republished if an input changed or was never
    processed. A batch another run holds is skipped (that run brings it up to date)."""
    marked = set()
    for name in store.list_names(CURATED, prefix):
        batch, _, leaf = name.rpartition("/")
        if leaf in (SUCCESS, ERROR):
            marked.add(batch)
    uploaded = set()
    for name in store.list_names(RAW, prefix):
        parsed = parse_blob_path(name)
        if parsed is not None and parsed[1] == TRANSACTIONS:
            uploaded.add(parsed[0])
    results = []
    for batch in sorted(marked | uploaded):
        if not BATCH_NAME.fullmatch(batch) or len(batch) > MAX_BATCH_NAME:
            continue
        inputs = _current_inputs(store, batch)
        if inputs is None and batch not in marked:
            continue  # deleted between the listing and now: nothing was published
        if inputs is not None and _already_done(store, batch, inputs):
            continue
        try:
            results.append(process_batch(store, batch, predict=predict))
        except BatchBusyError:
            log.info("batch=%s reconcile: another run holds it and brings it up to date", batch)
    return results


def _already_done(store: BatchStore, batch: str, inputs: dict[str, Any]) -> bool:
    for marker in (SUCCESS, ERROR):
        raw = store.read_small(CURATED, f"{batch}/{marker}")
        if raw is None:
            continue
        try:
            if json.loads(raw).get("inputs") == inputs:
                return True
        except (ValueError, AttributeError):
            pass  # an unreadable marker is simply replaced
    return False


COUNTS = ("rows_in", "rows_used", "rows_duplicate", "rows_quarantined", "customers")


def _publish(
    store: BatchStore,
    batch: str,
    inputs: dict[str, Any],
    run: BatchRun,
    started: float,
    partials: str | None = None,
) -> BatchResult:
    outputs = run.sink.outputs
    _remove_stale(store, batch, keep=set(outputs))
    report = run.result.report.to_dict()
    counts = {k: report[k] for k in COUNTS}
    written = blob_path(CURATED, batch, PREDICTIONS) in outputs
    drift_written = blob_path(CURATED, batch, DRIFT) in outputs
    elapsed = time.monotonic() - started
    marker = {
        "batch": batch,
        "status": "ok",
        "inputs": inputs,
        "outputs": outputs,
        **counts,
        "predictions": run.predictions_note or ("written" if written else None),
        "drift": "written" if drift_written else run.drift_note,
        "drifted": run.drift["drifted"] if drift_written and run.drift else None,
        "elapsed_seconds": round(elapsed, 3),
    }
    if partials is not None:  # INCREMENTAL_BATCHES on: what the store did with the batch
        marker["partials"] = partials
    store.write(CURATED, f"{batch}/{SUCCESS}", _json_bytes(marker), JSON_TYPE)
    log.info(
        "batch=%s outcome=processed labelled=%s rows_in=%d rows_used=%d rows_duplicate=%d "
        "rows_quarantined=%d customers=%d predictions=%s drift=%s seconds=%.2f",
        batch,
        inputs["labels"] is not None,
        *(counts[k] for k in COUNTS),
        marker["predictions"],
        "written" if drift_written else "absent",
        elapsed,
    )
    if run.predictions_note:
        log.warning("batch=%s predictions.csv not written: %s", batch, run.predictions_note)
    if drift_written and run.drift is not None:
        # Logged once the batch is published, so a retried run does not report it twice.
        log_drift(log, batch, run.drift)
    elif run.drift_note and not run.predictions_note:
        log.info("batch=%s drift.json not written: %s", batch, run.drift_note)
    return BatchResult(
        batch=batch,
        outcome=Outcome.PROCESSED,
        outputs=[*outputs, blob_path(CURATED, batch, SUCCESS)],
        report=report,
        predictions=run.predictions_note,
        drift=None if drift_written else run.drift_note,
    )


def _publish_error(
    store: BatchStore, batch: str, inputs: dict[str, Any], reason: str, started: float
) -> BatchResult:
    _remove_stale(store, batch, keep=set())
    body = {"batch": batch, "status": "error", "error": reason, "inputs": inputs}
    store.write(CURATED, f"{batch}/{ERROR}", _json_bytes(body), JSON_TYPE)
    # The reason may quote a row of the file, so it goes to error.json, not to the log.
    log.warning(
        "batch=%s outcome=error input rejected (%s); reason in %s; seconds=%.2f",
        batch,
        reason.split(":", 1)[0],
        blob_path(CURATED, batch, ERROR),
        time.monotonic() - started,
    )
    return BatchResult(
        batch=batch,
        outcome=Outcome.ERROR,
        outputs=[blob_path(CURATED, batch, ERROR)],
        error=reason,
    )


def _remove_stale(store: BatchStore, batch: str, keep: set[str]) -> None:
    """Delete the run outputs of the batch not in ``keep`` (blob paths) that exist (a
    lookup costs what a delete of a missing blob costs, and spares the lease check)."""
    for container, name in RUN_OUTPUTS:
        stale = blob_path(container, batch, name) not in keep
        if stale and store.stat(container, f"{batch}/{name}") is not None:
            store.delete(container, f"{batch}/{name}")


def _json_bytes(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
