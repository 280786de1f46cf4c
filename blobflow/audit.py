"""The decision audit trail in Blob Storage: append blobs in an immutable container.

``<DECISION_LOG_CONTAINER>/date=YYYY-MM-DD/<instance>-<random>-<n>.jsonl``: one append blob
per process and day (a new one after ``MAX_BLOCKS`` appends), created with
``If-None-Match: *`` so an existing blob is never overwritten. Each group commit of
``scoring.audit.DecisionLog`` is one Append Block of whole record lines (split at line
boundaries above ``MAX_BLOCK_BYTES``); an append block is written whole or not at all, so a
crash never leaves a torn record. In Azure the container has a time-based retention policy
with protected append writes (infra/modules/storage.bicep): blocks can be added, nothing can
be changed or deleted until the retention period ends.

The Azure SDK is imported only when a blob log is built, and storage errors become
``OSError`` messages without URLs or keys. The container must exist (it is declared in
infra/ with its policy): a missing container is an error, not something created here
without the policy.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from blobflow.store import connect
from scoring.audit import DecisionLog, local_decision_log
from scoring.settings import Settings

MAX_BLOCK_BYTES = 4 * 1024 * 1024  # the Append Block limit of every service version
MAX_BLOCKS = 45_000  # of the 50,000 an append blob may hold; then a new blob


class AppendBlobSink:
    """Record lines appended to per-day append blobs through a ``ContainerClient``, which
    ``connect`` builds on first use (in the writer thread, so a storage misconfiguration is
    a refused decision, never a crash at start-up)."""

    def __init__(self, connect: Callable[[], Any], name: str, instance: str | None = None):
        self._connect = connect
        self.container_name = name
        self._container: Any = None
        raw = instance or os.environ.get("WEBSITE_INSTANCE_ID") or socket.gethostname()
        safe = "".join(ch for ch in raw if ch.isalnum() or ch in "-_")[:40] or "instance"
        self._stem = f"{safe}-{os.getpid()}-{os.urandom(4).hex()}"
        self._current: dict[str, tuple[Any, int, int]] = {}  # partition -> (client, n, blocks)

    def describe(self) -> str:
        return f"blob container {self.container_name} (append blobs)"

    @property
    def container(self) -> Any:
        if self._container is None:
            self._container = self._connect()
        return self._container

    def recover(self) -> None:
        """Nothing to repair: an append block is atomic."""

    def _blob(self, partition: str, sequence: int) -> Any:
        from azure.core import MatchConditions

        name = f"date={partition}/{self._stem}-{sequence:04d}.jsonl"
        client = self.container.get_blob_client(name)
        client.create_append_blob(match_condition=MatchConditions.IfMissing)  # If-None-Match: *
        return client

    def append(self, partition: str, data: bytes) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        try:
            for chunk in _chunks(data, MAX_BLOCK_BYTES):
                current = self._current.get(partition)
                if current is None or current[2] >= MAX_BLOCKS:
                    sequence = 0 if current is None else current[1] + 1
                    self._current = {partition: (self._blob(partition, sequence), sequence, 0)}
                    current = self._current[partition]
                client, sequence, blocks = current
                client.append_block(chunk, length=len(chunk))
                self._current[partition] = (client, sequence, blocks + 1)
        except HttpResponseError as exc:
            raise OSError(f"blob storage refused the append (HTTP {exc.status_code})") from exc
        except AzureError as exc:
            raise OSError(f"blob storage unreachable ({type(exc).__name__})") from exc

    def close(self) -> None:
        self._current.clear()


def _chunks(data: bytes, limit: int) -> list[bytes]:
    """``data`` (whole lines) in pieces of at most ``limit`` bytes, cut only after a newline
    (a single line longer than ``limit`` is its own piece)."""
    out, start = [], 0
    while len(data) - start > limit:
        cut = data.rfind(b"\n", start, start + limit)
        end = cut + 1 if cut >= start else data.index(b"\n", start) + 1
        out.append(data[start:end])
        start = end
    if start < len(data):
        out.append(data[start:])
    return out


def decision_log_from_settings(settings: Settings | None = None) -> DecisionLog | None:
    """The function app's decision log: the blob container ``DECISION_LOG_CONTAINER`` names
    (connection ``AzureWebJobsStorage``), else the local ``DECISION_LOG_DIR``, else None."""
    settings = settings or Settings.from_env()
    chosen = settings.decision_log
    if chosen.container is None:
        return local_decision_log(
            chosen.directory, fsync=chosen.fsync, max_pending=chosen.max_pending
        )
    name = chosen.container

    def container() -> Any:
        return connect().get_container_client(name)

    return DecisionLog(AppendBlobSink(container, name), max_pending=chosen.max_pending)
