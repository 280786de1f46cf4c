"""Blob-triggered batches: ``raw/<batch>/`` uploads in, curated and quarantine blobs out.

Readiness rule (a trigger fires once per uploaded blob, in any order, possibly twice):

- ``raw/<batch>/transactions.csv`` absent: nothing to do yet (labels may arrive first).
- present: process the batch with whatever is there *now*, labels optional. When labels
  arrive later their trigger processes the batch again, and the labelled outputs replace
  the unlabelled ones. The outputs depend only on the input blobs, never on arrival order.

Commit protocol, so a half-written batch never carries ``_SUCCESS``:

1. Take the batch lock (a lease on ``curated/_locks/<batch>``), so runs never interleave.
2. If ``_SUCCESS`` (or ``error.json``) already records the same input etags, stop: a
   runtime retry or a duplicate event needs no work.
3. Delete ``_SUCCESS`` and ``error.json``, write the outputs, delete outputs of the other
   kind left by an earlier run (features/predictions vs training set), write ``_SUCCESS``
   last. Bad data writes ``error.json`` last instead and does not raise (so the runtime
   does not retry it); storage errors raise (so it does).

   Any other failure while reading the data (a bug the data triggered) also writes
   ``error.json``: retrying the same bytes would fail the same way, forever.

What ``_SUCCESS`` means (the contract for consumers, also in ``features/README.md``): the
outputs it lists (with their sha256) were produced from the inputs it lists (with their
etags). Outputs never outlive their input: when ``transactions.csv`` is deleted, the next
run for the batch (``handle_blob_deleted``, ``reconcile_batches``, or any event for the batch)
removes the outputs and ``_SUCCESS`` and leaves ``_WITHDRAWN`` saying why; when
``labels.csv`` is deleted the batch is reprocessed without labels. Between the deletion and
that run, ``verify_batch`` tells a consumer the outputs no longer match their inputs.

Batch names must match ``BATCH_NAME`` (segments of letters, digits, ``.``, ``_`` and ``-``,
not starting with ``.``, ``_`` or ``-``, not ending with ``.``); anything else is ignored and
logged only in escaped form, so a blob name cannot forge a log line.

Inputs are streamed from storage chunk by chunk into the chunked pipeline. The report's
``generated_at`` is the inputs' upload time and ``now`` is the transactions' upload time, so
reprocessing the same upload gives the same bytes (``elapsed_seconds`` aside).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import numpy as np
import pandas as pd

from features.definitions import ID
from features.outputs import CsvTableWriter, to_csv_text
from features.pipeline import run_pipeline
from features.rules import QUARANTINE_COLUMNS
from features.schema import InputError

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

log = logging.getLogger("features.blob_batch")

RAW, CURATED, QUARANTINE, MODELS = "raw", "curated", "quarantine", "models"
CONTAINERS = (RAW, CURATED, QUARANTINE, MODELS)
TRANSACTIONS, LABELS = "transactions.csv", "labels.csv"
TRAINING_SET, FEATURES, PREDICTIONS = "training_set.csv", "features.csv", "predictions.csv"
REPORT, SUCCESS, ERROR, WITHDRAWN = "dq_report.json", "_SUCCESS", "error.json", "_WITHDRAWN"
REJECTED_ROWS, REJECTED_LABELS = "rejected_rows.csv", "rejected_labels.csv"
# Every blob a run may leave behind, so a rerun can remove what it no longer produces.
CURATED_OUTPUTS = (TRAINING_SET, FEATURES, PREDICTIONS, REPORT)
QUARANTINE_OUTPUTS = (REJECTED_ROWS, REJECTED_LABELS)
LOCK_PREFIX = "_locks/"
STORAGE_SETTING = "AzureWebJobsStorage"
CSV_TYPE, JSON_TYPE = "text/csv; charset=utf-8", "application/json"
MAX_BATCH_NAME = 200
# One batch name pattern: "/"-separated segments; each starts with a letter or digit, holds
# only letters, digits, ".", "_" and "-", and does not end with "." (Azure advises against
# names and segments ending in a dot). No spaces, backslashes or control characters: a
# backslash becomes "/" in some tools, and a line break would forge a log line.
SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_-])?"
BATCH_NAME = re.compile(rf"{SEGMENT}(?:/{SEGMENT}){{0,9}}")

# Azurite's development account. Its key is the public, documented emulator constant (the
# same for every Azurite install); it is not a secret and only ever reaches 127.0.0.1.
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_DEV_BLOB_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"


class BatchBusyError(RuntimeError):
    """Another run holds the batch lock; raised so the runtime retries this event later."""


class StorageNotConfiguredError(RuntimeError):
    """No usable storage connection settings; the message names the settings to set."""


class PredictionsUnavailableError(RuntimeError):
    """No model to score with; the batch is still published, without predictions.csv."""


@dataclass(frozen=True)
class BlobInfo:
    etag: str
    last_modified: datetime
    size: int

    def record(self) -> dict[str, Any]:
        return {
            "etag": self.etag,
            "last_modified": self.last_modified.isoformat(),
            "size": self.size,
        }


class BatchStore(Protocol):
    """The storage operations a batch run needs (Blob Storage in production)."""

    def stat(self, container: str, name: str) -> BlobInfo | None: ...

    def open_read(self, container: str, name: str, etag: str) -> BinaryIO:
        """A binary stream of the blob, failing if it changes while being read."""
        ...

    def read_small(self, container: str, name: str) -> bytes | None: ...

    def write(
        self, container: str, name: str, data: bytes | BinaryIO, content_type: str
    ) -> None: ...

    def delete(self, container: str, name: str) -> None:
        """Delete if present."""
        ...

    def lock(self, key: str) -> AbstractContextManager[None]: ...

    def list_names(self, container: str, prefix: str) -> Iterator[str]:
        """Names of the blobs in ``container`` starting with ``prefix``."""
        ...


Predictor = Callable[[pd.DataFrame], pd.DataFrame]


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


# ---------------------------------------------------------------- naming


def parse_blob_path(path: str) -> tuple[str, str] | None:
    """``(batch, file)`` for ``[raw/]<batch>/transactions.csv|labels.csv``, else None.

    Batch names may contain ``/`` (e.g. ``2025/06/bank-a``) and must match ``BATCH_NAME``
    in full, at most ``MAX_BATCH_NAME`` characters (so ``_locks``, ``..``, empty segments,
    backslashes and control characters are all refused).
    """
    name = path.removeprefix(f"{RAW}/")
    batch, _, file = name.rpartition("/")
    if file not in (TRANSACTIONS, LABELS) or len(batch) > MAX_BATCH_NAME:
        return None
    if not BATCH_NAME.fullmatch(batch):
        return None
    return batch, file


def safe_name(name: str, limit: int = 120) -> str:
    """A blob name for a log line: escaped (no line breaks or control characters survive)
    and cut to ``limit`` characters."""
    shown = ascii(name[:limit])
    return shown + ("..." if len(name) > limit else "")


# ---------------------------------------------------------------- orchestration


def handle_blob_event(
    store: BatchStore, blob_path: str, predict: Predictor | None = None
) -> BatchResult:
    """What the blob trigger does for one uploaded blob."""
    parsed = parse_blob_path(blob_path)
    if parsed is None:
        log.warning(
            "blob event ignored: %s is not <batch>/%s or <batch>/%s with a valid batch name",
            safe_name(blob_path),
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
    with store.lock(batch):
        return _process_locked(store, batch, predict, force)


def _process_locked(
    store: BatchStore, batch: str, predict: Predictor | None, force: bool
) -> BatchResult:
    started = time.monotonic()
    transactions = store.stat(RAW, f"{batch}/{TRANSACTIONS}")
    if transactions is None:
        if _withdraw(store, batch):
            return BatchResult(batch=batch, outcome=Outcome.WITHDRAWN)
        log.info("batch=%s outcome=waiting (no %s yet)", batch, TRANSACTIONS)
        return BatchResult(batch=batch, outcome=Outcome.WAITING)
    labels = store.stat(RAW, f"{batch}/{LABELS}")
    inputs = {
        "transactions": transactions.record(),
        "labels": labels.record() if labels else None,
    }
    if not force and _already_done(store, batch, inputs):
        log.info("batch=%s outcome=skipped (these inputs were already processed)", batch)
        return BatchResult(batch=batch, outcome=Outcome.SKIPPED)

    store.delete(CURATED, f"{batch}/{SUCCESS}")
    store.delete(CURATED, f"{batch}/{ERROR}")
    if store.stat(CURATED, f"{batch}/{WITHDRAWN}") is not None:  # only after a withdrawal
        store.delete(CURATED, f"{batch}/{WITHDRAWN}")
    uploaded = max(i.last_modified for i in (transactions, labels) if i is not None)
    try:
        run = _run(store, batch, transactions, labels, predict, uploaded)
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
    return _publish(store, batch, inputs, run, started)


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
    store: BatchStore, blob_path: str, predict: Predictor | None = None
) -> BatchResult:
    """What a BlobDeleted event for ``raw/<batch>/...`` does: bring the batch's outputs in
    line with the inputs that are left (withdrawn, or reprocessed without labels)."""
    return handle_blob_event(store, blob_path, predict)


def reconcile_batches(store: BatchStore, predict: Predictor | None = None) -> list[BatchResult]:
    """Re-check every batch that has a marker and fix those whose inputs changed or went
    away (for a timer: catches deletions whose events were lost)."""
    results = []
    batches = sorted(
        {
            name.rpartition("/")[0]
            for name in store.list_names(CURATED, "")
            if name.rpartition("/")[2] in (SUCCESS, ERROR)
        }
    )
    for batch in batches:
        if not BATCH_NAME.fullmatch(batch) or verify_batch(store, batch):
            continue
        results.append(process_batch(store, batch, predict=predict))
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


@dataclass
class _Run:
    report: dict[str, Any]
    csvs: dict[str, str]  # curated file name -> CSV text
    quarantine: BinaryIO  # rejected transaction rows, spooled to a temporary file
    rejected_labels: str | None
    predictions_note: str | None
    counts: dict[str, Any]


def _run(
    store: BatchStore,
    batch: str,
    transactions: BlobInfo,
    labels: BlobInfo | None,
    predict: Predictor | None,
    uploaded: datetime,
) -> _Run:
    def open_labels() -> BinaryIO | None:
        if labels is None:
            return None
        return store.open_read(RAW, f"{batch}/{LABELS}", labels.etag)

    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
    try:
        writer = CsvTableWriter(spool, QUARANTINE_COLUMNS)
        result = run_pipeline(
            store.open_read(RAW, f"{batch}/{TRANSACTIONS}", transactions.etag),
            open_labels(),
            now=transactions.last_modified,
            generated_at=uploaded,
            on_quarantine=writer,
        )
        rejected_labels = None
        if result.label_quarantine is not None:
            rejected_labels = to_csv_text(result.label_quarantine)
        csvs: dict[str, str] = {}
        note = None
        if result.training_set is not None:
            csvs[TRAINING_SET] = to_csv_text(result.training_set)
        else:
            csvs[FEATURES] = to_csv_text(result.features)
            if predict is None:
                note = "no model configured for this run"
            else:
                try:
                    csvs[PREDICTIONS] = to_csv_text(predict(result.features))
                except PredictionsUnavailableError as exc:
                    note = f"model unavailable: {exc}"
    except BaseException:
        spool.close()
        raise
    r = result.report.to_dict()
    counts = {
        k: r[k] for k in ("rows_in", "rows_used", "rows_duplicate", "rows_quarantined", "customers")
    }
    return _Run(r, csvs, spool, rejected_labels, note, counts)


def _blob(container: str, batch: str, name: str) -> str:
    return f"{container}/{batch}/{name}"


def _publish(
    store: BatchStore, batch: str, inputs: dict[str, Any], run: _Run, started: float
) -> BatchResult:
    outputs: dict[str, dict[str, Any]] = {}

    def put(container: str, name: str, data: bytes | BinaryIO, content_type: str) -> None:
        store.write(container, f"{batch}/{name}", data, content_type)

    for name, text in run.csvs.items():
        data = text.encode("utf-8")
        put(CURATED, name, data, CSV_TYPE)
        outputs[_blob(CURATED, batch, name)] = _describe(data)
    report = (json.dumps(run.report, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    put(CURATED, REPORT, report, JSON_TYPE)
    outputs[_blob(CURATED, batch, REPORT)] = _describe(report)
    with run.quarantine as spool:
        outputs[_blob(QUARANTINE, batch, REJECTED_ROWS)] = _describe_file(spool)
        put(QUARANTINE, REJECTED_ROWS, spool, CSV_TYPE)
    if run.rejected_labels is not None:
        data = run.rejected_labels.encode("utf-8")
        put(QUARANTINE, REJECTED_LABELS, data, CSV_TYPE)
        outputs[_blob(QUARANTINE, batch, REJECTED_LABELS)] = _describe(data)
    _remove_stale(store, batch, keep=set(outputs))
    elapsed = time.monotonic() - started
    marker = {
        "batch": batch,
        "status": "ok",
        "inputs": inputs,
        "outputs": outputs,
        **run.counts,
        "predictions": run.predictions_note or ("written" if PREDICTIONS in run.csvs else None),
        "elapsed_seconds": round(elapsed, 3),
    }
    put(CURATED, SUCCESS, _json_bytes(marker), JSON_TYPE)
    log.info(
        "batch=%s outcome=processed labelled=%s rows_in=%d rows_used=%d rows_duplicate=%d "
        "rows_quarantined=%d customers=%d predictions=%s seconds=%.2f",
        batch,
        inputs["labels"] is not None,
        run.counts["rows_in"],
        run.counts["rows_used"],
        run.counts["rows_duplicate"],
        run.counts["rows_quarantined"],
        run.counts["customers"],
        marker["predictions"],
        elapsed,
    )
    if run.predictions_note:
        log.warning("batch=%s predictions.csv not written: %s", batch, run.predictions_note)
    return BatchResult(
        batch=batch,
        outcome=Outcome.PROCESSED,
        outputs=[*outputs, _blob(CURATED, batch, SUCCESS)],
        report=run.report,
        predictions=run.predictions_note,
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
        _blob(CURATED, batch, ERROR),
        time.monotonic() - started,
    )
    return BatchResult(
        batch=batch,
        outcome=Outcome.ERROR,
        outputs=[_blob(CURATED, batch, ERROR)],
        error=reason,
    )


def _remove_stale(store: BatchStore, batch: str, keep: set[str]) -> None:
    for container, names in ((CURATED, CURATED_OUTPUTS), (QUARANTINE, QUARANTINE_OUTPUTS)):
        for name in names:
            if _blob(container, batch, name) not in keep:
                store.delete(container, f"{batch}/{name}")


def _json_bytes(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _describe(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _describe_file(handle: BinaryIO) -> dict[str, Any]:
    """Size and sha256 of a spooled file, left positioned at its start for uploading."""
    handle.seek(0)
    digest = hashlib.sha256()
    size = 0
    while block := handle.read(1 << 20):
        digest.update(block)
        size += len(block)
    handle.seek(0)
    return {"bytes": size, "sha256": digest.hexdigest()}


def predictions_frame(model: Any, features: pd.DataFrame) -> pd.DataFrame:
    """Score every customer of a features table with a loaded bundle (``scoring.bundle``).

    Each model input takes the first field it accepts: the features table has every Part 1
    feature, so nothing is defaulted here, unlike API requests.
    """
    plan, manifest = model.plan, model.manifest
    columns = [next(a for a in accepts if a in features.columns) for accepts in plan.accepts]
    matrix = features[columns].to_numpy(dtype=float)
    probability = np.asarray(model.scorer.probabilities(matrix), dtype=float)
    return pd.DataFrame(
        {
            ID: features[ID].to_numpy(),
            "probability": np.round(probability, 6),
            "prediction": (probability >= manifest.threshold).astype("int64"),
            "model_version": manifest.model_version,
        }
    )


# ---------------------------------------------------------------- Blob Storage edge


class ChunkReader(io.RawIOBase):
    """A readable raw stream over an iterator of byte chunks (a blob download's
    ``chunks()``), so the CSV reader pulls the blob range by range instead of whole."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.chunks_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self.chunks_read += 1
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def connect(setting: str = STORAGE_SETTING, **client_options: Any) -> BlobServiceClient:
    """A Blob service client from the Functions-style connection settings named ``setting``.

    ``<setting>`` holding a connection string (``UseDevelopmentStorage=true`` = Azurite)
    wins; otherwise an identity-based connection: ``<setting>__blobServiceUri`` (or
    ``__serviceUri`` / ``__accountName``) with the managed identity ``<setting>__clientId``
    (or ``DefaultAzureCredential``). No key ever comes from code or reaches a log.
    """
    from azure.storage.blob import BlobServiceClient

    value = (os.environ.get(setting) or "").strip()
    if value:
        if value.replace(" ", "").lower().startswith("usedevelopmentstorage=true"):
            value = (
                f"DefaultEndpointsProtocol=http;AccountName={_DEV_ACCOUNT};"
                f"AccountKey={_DEV_KEY};BlobEndpoint={_DEV_BLOB_ENDPOINT};"
            )
        return BlobServiceClient.from_connection_string(value, **client_options)
    uri = os.environ.get(f"{setting}__blobServiceUri") or os.environ.get(f"{setting}__serviceUri")
    account = os.environ.get(f"{setting}__accountName")
    if not uri and account:
        uri = f"https://{account}.blob.core.windows.net"
    if not uri:
        raise StorageNotConfiguredError(
            f"set {setting} (a connection string, or UseDevelopmentStorage=true for Azurite) "
            f"or {setting}__blobServiceUri for an identity-based connection"
        )
    client_id = os.environ.get(f"{setting}__clientId")
    if client_id:
        from azure.identity import ManagedIdentityCredential

        credential: Any = ManagedIdentityCredential(client_id=client_id)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobServiceClient(uri, credential=credential, **client_options)


class BlobStore:
    """``BatchStore`` over Azure Blob Storage (or Azurite)."""

    def __init__(
        self,
        service: BlobServiceClient,
        *,
        lease_seconds: int = 60,
        lock_wait_seconds: float = 120.0,
        lock_poll_seconds: float = 1.0,
    ) -> None:
        self.service = service
        self.lease_seconds = lease_seconds
        self.lock_wait_seconds = lock_wait_seconds
        self.lock_poll_seconds = lock_poll_seconds
        self._containers_ready = False

    def ensure_containers(self, names: tuple[str, ...] = CONTAINERS) -> None:
        """Create missing containers. A 403 means the caller may not create containers (in
        Azure the templates create them; an operator's roles cover only some): carry on, and
        let the real read or write report a genuine lack of access."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        for name in names:
            try:
                self.service.create_container(name)
            except ResourceExistsError:
                pass
            except HttpResponseError as exc:
                if exc.status_code != 403:
                    raise
        self._containers_ready = True

    def _blob(self, container: str, name: str) -> Any:
        return self.service.get_blob_client(container, name)

    def stat(self, container: str, name: str) -> BlobInfo | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            p = self._blob(container, name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobInfo(etag=p.etag, last_modified=p.last_modified, size=p.size)

    def open_read(self, container: str, name: str, etag: str) -> BinaryIO:
        from azure.core import MatchConditions

        download = self._blob(container, name).download_blob(
            max_concurrency=1, etag=etag, match_condition=MatchConditions.IfNotModified
        )
        return io.BufferedReader(ChunkReader(download.chunks()), buffer_size=1 << 20)

    def read_small(self, container: str, name: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._blob(container, name).download_blob().readall()
        except ResourceNotFoundError:
            return None

    def write(self, container: str, name: str, data: bytes | BinaryIO, content_type: str) -> None:
        from azure.storage.blob import ContentSettings

        if not self._containers_ready:
            self.ensure_containers((CURATED, QUARANTINE))
        self._blob(container, name).upload_blob(
            data,
            overwrite=True,
            content_settings=ContentSettings(content_type=content_type),
            max_concurrency=2,
        )

    def delete(self, container: str, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._blob(container, name).delete_blob()

    def list_names(self, container: str, prefix: str) -> Iterator[str]:
        client = self.service.get_container_client(container)
        for blob in client.list_blobs(name_starts_with=prefix or None):
            yield blob.name

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per-batch lock: a renewed lease on ``curated/_locks/<key>``.

        A crashed holder's lease expires after ``lease_seconds``. Waits up to
        ``lock_wait_seconds``, then raises ``BatchBusyError`` (the runtime retries the event).
        """
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        if not self._containers_ready:
            self.ensure_containers((CURATED, QUARANTINE))
        blob = self._blob(CURATED, f"{LOCK_PREFIX}{key}")
        if not blob.exists():
            try:
                blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass
            except HttpResponseError as exc:  # leased by a racing run: exists already
                if exc.status_code != 412:
                    raise
        deadline = time.monotonic() + self.lock_wait_seconds
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=self.lease_seconds)
                break
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise
                if time.monotonic() >= deadline:
                    raise BatchBusyError(
                        f"batch {key!r} is being processed by another run"
                    ) from None
                time.sleep(self.lock_poll_seconds)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_seconds / 3):
                try:
                    lease.renew()
                except HttpResponseError:
                    log.warning("batch=%s lock lease could not be renewed", key)
                    return

        renewer = threading.Thread(target=renew, name="batch-lock-renew", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=10)
            try:
                lease.release()
            except HttpResponseError:
                log.warning("batch=%s lock lease could not be released; it expires", key)
