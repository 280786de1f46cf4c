"""The blob flow's incremental store: each processed batch in ``curated/partials/``, and
optionally the whole history's features in ``curated/_all/``.

Off unless the app setting ``INCREMENTAL_BATCHES`` says otherwise:

* ``off`` (default): nothing beyond the batch's own outputs;
* ``partials``: every processed batch is added to the store ``curated/partials/``
  (``features.incremental``; the layout of ``features.partials_store``), replaced when the
  batch is reprocessed and removed when its transactions are withdrawn;
* ``all``: as ``partials``, then the whole history is built into ``curated/_all/``
  (``features.csv``, ``dq_report.json``/``.md``; ``quarantine/_all/quarantine.csv``) with
  ``_SUCCESS`` last, listing the batches it covers. No labels: labels belong to a batch.

Batches fold in name order, so names that sort by date (``2025-01-31``) give a history
in date order. Names with ``/`` segments are not added (the store keeps one folder level).
The commit protocol (``blobflow.commit``) calls ``update_store`` under the store's own
lease, after the batch's outputs are written and before its ``_SUCCESS``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from datetime import datetime
from typing import Any, BinaryIO

from blobflow.naming import CURATED, JSON_TYPE, RAW, SUCCESS, TRANSACTIONS
from blobflow.sink import BlobSink
from blobflow.store import BatchStore, BlobInfo
from features.incremental import add_batch, build_result, remove_batch
from features.partials_store import (
    BATCH_NAME as STORE_BATCH_NAME,
)
from features.partials_store import (
    MANIFEST,
    PREFIX,
    PartialsStore,
    StoreError,
)
from features.publish import run_and_publish

log = logging.getLogger("blobflow.partials")

SETTING = "INCREMENTAL_BATCHES"
OFF, PARTIALS, ALL = "off", "partials", "all"
MODES = (OFF, PARTIALS, ALL)
STORE_PREFIX = "partials/"  # in CURATED
ALL_BATCH = "_all"  # curated/_all/: never a batch name (those start with a letter or digit)
LOCK_KEY = "_partials"  # curated/_locks/_partials serialises changes to the store
PARQUET_TYPE = "application/vnd.apache.parquet"


def mode_from_settings(environ: dict[str, str] | None = None) -> str:
    """``INCREMENTAL_BATCHES`` (default ``off``); an unknown value is refused loudly."""
    value = ((environ if environ is not None else os.environ).get(SETTING) or OFF).strip()
    if value.lower() not in MODES:
        raise ValueError(f"{SETTING}={value!r} is not one of: {', '.join(MODES)}")
    return value.lower()


class BlobBatchFiles:
    """``features.partials_store.BatchFiles`` under ``curated/partials/``. A batch's
    manifest is deleted first and written last, so a reader never takes a batch that is
    being replaced for a whole one (it sees the batch absent meanwhile)."""

    def __init__(self, store: BatchStore, prefix: str = STORE_PREFIX) -> None:
        self.store = store
        self.prefix = prefix

    def _name(self, batch: str, file: str) -> str:
        return f"{self.prefix}{PREFIX}{batch}/{file}"

    def batch_names(self) -> list[str]:
        names = []
        for name in self.store.list_names(CURATED, f"{self.prefix}{PREFIX}"):
            folder, _, leaf = name[len(self.prefix) :].rpartition("/")
            if leaf == MANIFEST and folder.startswith(PREFIX):
                names.append(folder[len(PREFIX) :])
        return sorted(n for n in names if STORE_BATCH_NAME.match(n))

    def open(self, batch: str, file: str) -> BinaryIO:
        data = self.store.read_small(CURATED, self._name(batch, file))
        if data is None:
            raise StoreError(f"batch {batch}: {file} is missing from the store")
        return io.BytesIO(data)

    def write_batch(self, batch: str, files: dict[str, bytes]) -> None:
        self.store.delete(CURATED, self._name(batch, MANIFEST))
        for file, data in files.items():
            if file != MANIFEST:
                self.store.write(CURATED, self._name(batch, file), data, PARQUET_TYPE)
        self.store.write(CURATED, self._name(batch, MANIFEST), files[MANIFEST], JSON_TYPE)

    def delete_batch(self, batch: str) -> None:
        self.store.delete(CURATED, self._name(batch, MANIFEST))
        for name in list(self.store.list_names(CURATED, self._name(batch, ""))):
            self.store.delete(CURATED, name)


def blob_partials(store: BatchStore) -> PartialsStore:
    return PartialsStore(BlobBatchFiles(store))


def update_store(
    store: BatchStore, batch: str, transactions: BlobInfo | None, mode: str
) -> str | None:
    """Add (``transactions`` given) or remove (None: withdrawn) one batch, then rebuild
    ``curated/_all/`` in mode ``all``. Returns a note for the batch's marker: what was done,
    or why the batch was not added (``None`` when the mode is off)."""
    if mode == OFF:
        return None
    if not STORE_BATCH_NAME.match(batch):
        note = "not added: batch names with '/' are not kept in curated/partials/"
        log.info("batch=%s partials %s", batch, note)
        return note
    partials = blob_partials(store)
    if transactions is None:
        refolded = remove_batch(partials, batch)
        note = "removed"
    else:
        source = store.open_read(RAW, f"{batch}/{TRANSACTIONS}", transactions.etag)
        try:
            added = add_batch(partials, batch, source, now=transactions.last_modified)
        except StoreError as exc:  # e.g. another header: the batch's own outputs stand
            note = f"not added: {exc}"
            log.warning("batch=%s partials %s", batch, note)
            return note
        refolded = added.refolded
        note = "added"
    if refolded:
        note += f"; re-folded {len(refolded)} later batch(es)"
    log.info("batch=%s partials %s", batch, note)
    if mode == ALL:
        build_all(store, partials, transactions.last_modified if transactions else None)
    return note


def build_all(store: BatchStore, partials: PartialsStore, now: datetime | None) -> None:
    """Whole-history outputs in ``curated/_all/``: ``_SUCCESS`` removed first and written
    last (with the batches covered); an empty store withdraws them."""
    store.delete(CURATED, f"{ALL_BATCH}/{SUCCESS}")
    batches = partials.batch_names()
    sink = BlobSink(store, ALL_BATCH)
    if not batches:
        for name in list(store.list_names(CURATED, f"{ALL_BATCH}/")):
            store.delete(CURATED, name)
        return
    result = run_and_publish(
        sink, lambda quarantine: build_result(partials, now=now, on_quarantine=quarantine)
    )
    report = result.report.to_dict()
    marker: dict[str, Any] = {
        "batch": ALL_BATCH,
        "status": "ok",
        "batches": batches,
        "outputs": sink.outputs,
        **{k: report[k] for k in ("rows_in", "rows_used", "rows_duplicate", "rows_quarantined")},
        "customers": report["customers"],
    }
    body = (json.dumps(marker, indent=2) + "\n").encode("utf-8")
    store.write(CURATED, f"{ALL_BATCH}/{SUCCESS}", body, JSON_TYPE)
