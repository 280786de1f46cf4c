"""Where things live in Blob Storage: containers, batch names and markers.

A batch is the folder ``raw/<batch>/`` (``transactions.csv``, optionally ``labels.csv``);
its outputs go to ``curated/<batch>/`` and ``quarantine/<batch>/`` under the names the CLI
writes (``blobflow.sink`` maps ``features.publish.OUTPUT_FILES`` to blobs), plus
``predictions.csv``, ``drift.json`` and the markers. Standard library only: the function
app reads these names without loading the pipeline.
"""

from __future__ import annotations

import re

RAW, CURATED, QUARANTINE, MODELS = "raw", "curated", "quarantine", "models"
CONTAINERS = (RAW, CURATED, QUARANTINE, MODELS)
TRANSACTIONS, LABELS = "transactions.csv", "labels.csv"
PREDICTIONS, DRIFT = "predictions.csv", "drift.json"
SUCCESS, ERROR, WITHDRAWN = "_SUCCESS", "error.json", "_WITHDRAWN"
CSV_TYPE, JSON_TYPE = "text/csv; charset=utf-8", "application/json"
# Quarantine names blob consumers used before the blob flow took the CLI's names
# (quarantine.csv, labels_quarantine.csv): still written, as copies, for one release.
REJECTED_ROWS, REJECTED_LABELS = "rejected_rows.csv", "rejected_labels.csv"
LOCK_PREFIX = "_locks/"
MAX_BATCH_NAME = 200
# One batch name pattern: "/"-separated segments; each starts with a letter or digit, holds
# only letters, digits, ".", "_" and "-", and does not end with "." (Azure advises against
# names and segments ending in a dot). No spaces, backslashes or control characters: a
# backslash becomes "/" in some tools, and a line break would forge a log line.
SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_-])?"
BATCH_NAME = re.compile(rf"{SEGMENT}(?:/{SEGMENT}){{0,9}}")


def blob_path(container: str, batch: str, name: str) -> str:
    return f"{container}/{batch}/{name}"


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


# Storage events name their blob in the subject:
# /blobServices/default/containers/<container>/blobs/<name>.
EVENT_SUBJECT_PREFIX = "/blobServices/default/containers/"


def blob_path_from_subject(subject: str) -> str | None:
    """``<container>/<name>`` from a storage event's subject, else None."""
    if not subject.startswith(EVENT_SUBJECT_PREFIX):
        return None
    container, sep, name = subject[len(EVENT_SUBJECT_PREFIX) :].partition("/blobs/")
    if not sep or not container or "/" in container or not name:
        return None
    return f"{container}/{name}"
