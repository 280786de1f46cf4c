"""The blob flow's ``OutputSink``: a run's files into ``curated/<batch>/`` and
``quarantine/<batch>/``, each recorded with its size and sha256 for ``_SUCCESS``.

Every output keeps the name the CLI gives it (``features.publish.OUTPUT_FILES``); the
quarantine files are also written under their old blob names (``LEGACY``) for one release.
A streamed file (the quarantine, written while the run reads) is spooled to a temporary
file and uploaded when complete, so nothing half-written ever reaches storage.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from blobflow.naming import (
    CURATED,
    DRIFT,
    PREDICTIONS,
    QUARANTINE,
    REJECTED_LABELS,
    REJECTED_ROWS,
    blob_path,
)
from blobflow.store import BatchStore
from features.publish import (
    CSV,
    LABELS_QUARANTINE,
    OUTPUT_FILES,
    Area,
    OutputFile,
)
from features.publish import (
    QUARANTINE as QUARANTINE_FILE,
)

CONTAINER_OF: dict[Area, str] = {Area.CURATED: CURATED, Area.QUARANTINE: QUARANTINE}
LEGACY: dict[OutputFile, str] = {QUARANTINE_FILE: REJECTED_ROWS, LABELS_QUARANTINE: REJECTED_LABELS}


def output_blob(file: OutputFile) -> tuple[str, str]:
    """(container, name within the batch folder) of a run's output file."""
    return CONTAINER_OF[file.area], file.name(CSV)


# Every blob a run may leave behind, so a rerun can remove what it no longer produces.
RUN_OUTPUTS: tuple[tuple[str, str], ...] = (
    *(output_blob(f) for f in OUTPUT_FILES),
    *((CONTAINER_OF[f.area], legacy) for f, legacy in LEGACY.items()),
    (CURATED, PREDICTIONS),
    (CURATED, DRIFT),
)


def describe(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def describe_file(handle: BinaryIO) -> dict[str, Any]:
    """Size and sha256 of a spooled file, left positioned at its start for uploading."""
    handle.seek(0)
    digest = hashlib.sha256()
    size = 0
    while block := handle.read(1 << 20):
        digest.update(block)
        size += len(block)
    handle.seek(0)
    return {"bytes": size, "sha256": digest.hexdigest()}


class BlobSink:
    """``features.publish.OutputSink`` for one batch (CSV tables only)."""

    fmt = CSV

    def __init__(self, store: BatchStore, batch: str) -> None:
        self.store = store
        self.batch = batch
        self.outputs: dict[str, dict[str, Any]] = {}  # blob path -> bytes and sha256
        self.written: list[str] = []

    def put(self, container: str, name: str, data: bytes | BinaryIO, content_type: str) -> None:
        """Write one blob of the batch and record it (``data`` at its start if a file)."""
        described = describe(data) if isinstance(data, bytes) else describe_file(data)
        self.store.write(container, f"{self.batch}/{name}", data, content_type)
        path = blob_path(container, self.batch, name)
        self.outputs[path] = described
        self.written.append(path)

    def write(self, file: OutputFile, data: bytes) -> None:
        container, name = output_blob(file)
        for target in (name, LEGACY.get(file)):
            if target is not None:
                self.put(container, target, data, file.content_type(CSV))

    @contextmanager
    def stream(self, file: OutputFile) -> Iterator[BinaryIO]:
        container, name = output_blob(file)
        with tempfile.TemporaryFile() as spool:
            yield spool  # type: ignore[misc]
            for target in (name, LEGACY.get(file)):
                if target is not None:
                    spool.seek(0)
                    self.put(container, target, spool, file.content_type(CSV))
