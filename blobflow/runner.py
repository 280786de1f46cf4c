"""One batch through the pipeline: inputs streamed from ``raw/<batch>/`` chunk by chunk,
outputs written through a ``BlobSink`` under the CLI's names, then ``predictions.csv`` and
``drift.json`` (when the model's bundle has a drift reference).

The report's ``generated_at`` is the inputs' upload time and the run's instant ``now`` is
the transactions' upload time, so reprocessing the same upload gives the same bytes
(``elapsed_seconds`` aside). The commit protocol around a run is ``blobflow.commit``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO

from blobflow.naming import (
    CSV_TYPE,
    CURATED,
    DRIFT,
    JSON_TYPE,
    LABELS,
    PREDICTIONS,
    RAW,
    TRANSACTIONS,
)
from blobflow.predict import PredictionsUnavailableError, Predictor
from blobflow.sink import BlobSink
from blobflow.store import BatchStore, BlobInfo
from features.engine import QuarantineSink, RunResult
from features.outputs import csv_bytes
from features.pipeline import run_pipeline
from features.publish import run_and_publish


@dataclass
class BatchRun:
    result: RunResult
    sink: BlobSink  # what was written, with sizes and sha256
    predictions_note: str | None  # why predictions.csv is absent; None when written
    drift: dict[str, Any] | None = None  # the report written as drift.json
    drift_note: str | None = None  # why drift.json is absent; None when written


def run_batch(
    store: BatchStore,
    batch: str,
    transactions: BlobInfo,
    labels: BlobInfo | None,
    predict: Predictor | None,
) -> BatchRun:
    """Run the pipeline on the batch's current inputs (those ``stat`` found, read only if
    unchanged since) and write every output. Raises ``InputError`` for unusable input
    before anything is written."""
    uploaded = max(i.last_modified for i in (transactions, labels) if i is not None)
    sink = BlobSink(store, batch)

    def engine(quarantine: QuarantineSink) -> RunResult:
        label_stream: BinaryIO | None = None
        if labels is not None:
            label_stream = store.open_read(RAW, f"{batch}/{LABELS}", labels.etag)
        return run_pipeline(
            store.open_read(RAW, f"{batch}/{TRANSACTIONS}", transactions.etag),
            label_stream,
            now=transactions.last_modified,
            generated_at=uploaded,
            on_quarantine=quarantine,
        )

    result = run_and_publish(sink, engine)
    if predict is None:
        note = "no model configured for this run"
        return BatchRun(result, sink, note, drift_note=note)
    try:
        scores = predict(result.features)
    except PredictionsUnavailableError as exc:
        note = f"model unavailable: {exc}"
        return BatchRun(result, sink, note, drift_note=note)
    sink.put(CURATED, PREDICTIONS, csv_bytes(scores.predictions), CSV_TYPE)
    if scores.drift is not None:
        body = (json.dumps(scores.drift, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        sink.put(CURATED, DRIFT, body, JSON_TYPE)
    return BatchRun(result, sink, None, drift=scores.drift, drift_note=scores.drift_note)
